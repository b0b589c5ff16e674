"""The main job (`make demo`): cold-start SFT, GRPO with outcome vs CESAR rewards, scaling sweep.

Stages, each a job of its own with its own workdir under the demo's, run in-process in order:

  WORKDIR/sft       cold-start SFT of a tiny audio LM from scratch on the synthetic traces
                    (corruptions included: hallucinated events, inconsistent answers, rambling)
  WORKDIR/outcome   GRPO from the SFT checkpoint with the outcome rewards (RLVR baseline)
  WORKDIR/cesar     GRPO from the same checkpoint, same seed and steps, CESAR rewards
  WORKDIR/          the scaling sweep of the three models: report.md, report.json, figures

Each stage resumes from its own checkpoints, so re-running `make demo` after an interruption
continues where it stopped, and a finished stage costs only its restore.
"""

from __future__ import annotations

import pathlib
import time

from absl import logging

from cesar_jax import config as config_lib
from cesar_jax import sft
from cesar_jax.eval import evaluate
from cesar_jax.rl import trainer

GRPO_STAGES = ("outcome", "cesar")


def run(config, workdir: str) -> None:
  root = pathlib.Path(workdir)
  timings = {}

  def stage(name, fn, stage_config, stage_dir):
    t0 = time.perf_counter()
    logging.info("demo stage %s -> %s", name, stage_dir)
    print(f"\n=== demo: {name} ({stage_dir}) ===", flush=True)
    config_lib.save(stage_config, stage_dir)
    fn(stage_config, str(stage_dir))
    timings[name] = time.perf_counter() - t0

  stage("sft", sft.run, config.stages.sft, root / "sft")
  for name in GRPO_STAGES:
    grpo_config = config.stages[name]
    with grpo_config.unlocked():
      grpo_config.init_from = str(root / "sft")
    stage(f"grpo {name}", trainer.run, grpo_config, root / name)
  checkpoints = {"sft": str(root / "sft"), **{n: str(root / n) for n in GRPO_STAGES}}
  t0 = time.perf_counter()
  print("\n=== demo: scaling sweep of sft, outcome, cesar ===", flush=True)
  result = evaluate.evaluate(checkpoints, config.stages.eval, workdir)
  timings["eval"] = time.perf_counter() - t0
  print("\nstage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
  print(f"chance accuracy {result['chance_accuracy']:.1f}%; at each model's sweet spot:")
  for name, m in result["models"].items():
    acc = m["accuracy"]
    print(f"{name:8s} {m['sweet_spot_accuracy'] / result['chance_accuracy']:.2f}x chance; "
          f"accuracy by budget {[round(a, 1) for a in acc]}  slope "
          f"{m['slope_per_token']:+.4f} pts/token  95% CI {m['slope_ci']}  sweet spot "
          f"{m['sweet_spot']}")
  print(f"\nreport: {root / 'report.md'}")
