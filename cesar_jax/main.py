"""Entry point: `python -m cesar_jax.main --config=configs/X.py[:arg] --workdir=DIR`.

`--config.a.b=value` overrides any config field (an unknown field is an error naming it). The
job named by `config.job` runs with the resolved config, which is first written to
`WORKDIR/config.json`. Re-running the same command resumes from the workdir's checkpoints.
"""

from __future__ import annotations

import importlib

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from cesar_jax import config as config_lib
from cesar_jax import logs
from cesar_jax.parallel import distributed

# Each job is `run(config, workdir)`, imported only when chosen.
JOBS = {
    "sft": "cesar_jax.sft:run",
    "grpo": "cesar_jax.rl.trainer:run",
    "eval_scaling": "cesar_jax.eval.evaluate:run",
    "demo": "cesar_jax.demo:run",
    "compile_check": "cesar_jax.compile_check:run",
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, reports.")
flags.mark_flags_as_required(["config", "workdir"])


def resolve_job(name: str):
  if name not in JOBS:
    raise ValueError(f"config.job={name!r} is not a job; known: {', '.join(sorted(JOBS))}")
  module, _, fn = JOBS[name].partition(":")
  return getattr(importlib.import_module(module), fn)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed.initialize()
  config = _CONFIG.value
  workdir = str(config_lib.workdir_path(_WORKDIR.value))  # a gs:// URI stays one
  logs.setup(workdir)  # absl/orbax INFO -> WORKDIR/log.txt; the console keeps WARNING+ (see logs.py)
  job = resolve_job(config.job)
  if jax.process_index() == 0:
    config_lib.save(config, workdir)
  logging.info("job %s, workdir %s, process %d/%d, %d devices", config.job, workdir,
               jax.process_index(), jax.process_count(), jax.device_count())
  job(config, workdir)
  distributed.shutdown()


if __name__ == "__main__":
  app.run(main)
