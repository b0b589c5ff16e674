"""The jobs on several hosts: 2 processes x 4 CPU devices (jax.distributed on loopback, through
launch/multihost_cpu.sh) write the same metrics, step for step, as 1 process x 8 devices.

The smoke config with 8 prompts a step (the mesh's 8 batch shards; 4 per host): SFT from
scratch on both layouts, then GRPO on both layouts from the single-process SFT run, so the
2-process run also restores a checkpoint written by a different number of processes.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMING = ("time/", "perf/")

# Eight job runs (~2 minutes on 2 cores): the pod path's proof, so in `make test`.


def _env(**extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), **extra)
  env.pop("XLA_FLAGS", None)
  return env


def _single(config: str, workdir: pathlib.Path, *overrides: str) -> None:
  """1 process x 8 devices."""
  cmd = [sys.executable, "-m", "cesar_jax.main", f"--config={ROOT / config}",
         f"--workdir={workdir}", *overrides]
  proc = subprocess.run(cmd, env=_env(CESAR_LOCAL_CPU_DEVICES="8"), cwd=ROOT, text=True,
                        capture_output=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]


def _multi(config: str, workdir: pathlib.Path, *overrides: str) -> None:
  """2 processes x 4 devices, as a user runs it."""
  cmd = ["bash", str(ROOT / "launch" / "multihost_cpu.sh"), "2", "4", str(ROOT / config),
         str(workdir), *overrides]
  env = _env()
  if not (ROOT / ".venv" / "bin" / "python").exists():
    pytest.skip("launch/multihost_cpu.sh runs .venv/bin/python (make test creates it)")
  proc = subprocess.run(cmd, env=env, cwd=ROOT, text=True, capture_output=True, timeout=900)
  logs = "".join(p.read_text()[-2000:] for p in workdir.parent.glob(f"{workdir.name}.process*.log"))
  assert proc.returncode == 0, logs


def _metrics(workdir: pathlib.Path) -> list[dict]:
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines() if l]
  return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


def _assert_same(a: list[dict], b: list[dict]) -> None:
  assert [r["step"] for r in a] == [r["step"] for r in b] and a
  for ra, rb in zip(a, b):
    assert ra.keys() == rb.keys(), (ra.keys() ^ rb.keys())
    for key in ra:
      np.testing.assert_allclose(rb[key], ra[key], rtol=1e-4, atol=1e-5,
                                 err_msg=f"step {ra['step']} {key}")


SFT = ("configs/smoke.py:job=sft,sft_steps=3", "--config.sft.batch_size=8")
# The sweep on the smoke task's items and front end: 8 items in one call, 4 per host.
EVAL = ("--config.data.question_types=('pitch_compare',)", "--config.data.synthetic.clip_seconds=1.5",
        "--config.data.synthetic.trace_times=False", "--config.data.chunk_seconds=1.0",
        "--config.data.n_mels=16", "--config.data.buckets=(128,)", "--config.eval.budgets=(0,4)",
        "--config.eval.max_new_tokens=8", "--config.eval.items_per_call=8",
        "--config.eval.num_resamples=50")
GRPO = ("--config.data.batch_size=8",)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("multihost")
  _single(SFT[0], root / "sft_1x8", *SFT[1:])
  _multi(SFT[0], root / "sft_2x4", *SFT[1:])
  grpo = f"configs/smoke.py:init_from={root / 'sft_1x8'},steps=2"
  _single(grpo, root / "grpo_1x8", *GRPO)
  _multi(grpo, root / "grpo_2x4", *GRPO)
  evaluation = ("configs/eval_scaling.py:num_items=8,mode=both",
                f"--config.checkpoint=grpo={root / 'grpo_1x8'}", *EVAL)
  _single(evaluation[0], root / "eval_1x8", *evaluation[1:])
  _multi(evaluation[0], root / "eval_2x4", *evaluation[1:])
  return root


def test_sft_is_the_same_on_one_and_two_hosts(runs):
  _assert_same(_metrics(runs / "sft_1x8"), _metrics(runs / "sft_2x4"))


def test_grpo_is_the_same_on_one_and_two_hosts(runs):
  single, multi = _metrics(runs / "grpo_1x8"), _metrics(runs / "grpo_2x4")
  _assert_same(single, multi)
  assert all(0 <= r["logp_gap/mean"] < 1e-3 for r in single)  # float32: sampler == trainer


def test_files_are_written_once_and_checkpoints_by_every_host(runs):
  workdir = runs / "grpo_2x4"
  assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 2
  assert (workdir / "config.json").is_file() and (workdir / "model_config.json").is_file()
  steps = sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == "1"
  data = sorted(p.name for p in (workdir / "checkpoints" / "1" / "data").iterdir()
                if p.name.startswith("process_"))
  assert data == ["process_0-of-2.json", "process_1-of-2.json"]


def test_the_eval_sweep_is_the_same_on_one_and_two_hosts(runs):
  """Each host samples its block of every call's items; the rows are gathered and process 0
  writes one report, equal to the single-process one."""
  one = json.loads((runs / "eval_1x8" / "report.json").read_text())
  two = json.loads((runs / "eval_2x4" / "report.json").read_text())
  assert one["protocols"].keys() == two["protocols"].keys() == {"cap", "extend"}
  for protocol in one["protocols"]:
    a, b = one["protocols"][protocol]["models"]["grpo"], two["protocols"][protocol]["models"]["grpo"]
    for key in ("budgets", "accuracy", "mean_think_tokens"):
      np.testing.assert_allclose(b[key], a[key], rtol=1e-6, err_msg=f"{protocol} {key}")
