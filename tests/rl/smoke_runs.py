"""Runs of the real entry point (`python -m cesar_jax.main`) on configs/smoke.py, in subprocesses.

The runs of one pytest process share a JAX persistent compilation cache, so only the first run
of each shape pays for compiling. `sft_workdir()` and `reference_grpo()` are computed once per
pytest process (functools.cache) and shared by the tests that need them.
"""

from __future__ import annotations

import atexit
import functools
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = "configs/smoke.py"
TIMING_PREFIXES = ("time/", "perf/")
# The GRPO runs every test compares: 12 steps, checkpoints after steps 0, 3, 6, 9 (and 11),
# and a non-finite loss injected at step 4.
GRPO_STEPS = 12
NAN_STEP = 4
GRPO_OVERRIDES = ("--config.checkpoint_every=3", f"--config.debug.nan_steps=({NAN_STEP},)",
                  "--config.keep_checkpoints=10")


@functools.cache
def scratch() -> pathlib.Path:
  path = pathlib.Path(tempfile.mkdtemp(prefix="cesar_smoke_runs_"))
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  return path


def env() -> dict[str, str]:
  out = dict(os.environ)
  out.update({
      "JAX_PLATFORMS": "cpu",
      "XLA_FLAGS": "--xla_force_host_platform_device_count=2",  # a (1, 2, 1) mesh
      "JAX_COMPILATION_CACHE_DIR": str(scratch() / "jax_cache"),
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
      "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
      "HF_HUB_OFFLINE": "1",
      "TOKENIZERS_PARALLELISM": "false",
  })
  return out


def command(workdir: pathlib.Path, arg: str = "", *overrides: str) -> list[str]:
  config = CONFIG + (f":{arg}" if arg else "")
  return [sys.executable, "-m", "cesar_jax.main", f"--config={config}",
          f"--workdir={workdir}", *overrides]


def start(workdir: pathlib.Path, arg: str = "", *overrides: str) -> subprocess.Popen:
  log = open(workdir.parent / f"{workdir.name}.log", "ab")
  return subprocess.Popen(command(workdir, arg, *overrides), cwd=REPO, env=env(), stdout=log,
                          stderr=subprocess.STDOUT)


def log_tail(workdir: pathlib.Path, lines: int = 40) -> str:
  """The last lines of the run's console, then of its INFO log (WORKDIR/log.txt, where the
  quiet console sends absl's INFO lines)."""
  out = []
  for path in (workdir.parent / f"{workdir.name}.log", workdir / "log.txt"):
    text = path.read_text(errors="replace") if path.exists() else ""
    out += text.splitlines()[-lines:]
  return "\n".join(out)


def run(workdir: pathlib.Path, arg: str = "", *overrides: str, timeout: float = 600) -> None:
  """Runs to completion; a failure shows the end of its log."""
  proc = start(workdir, arg, *overrides)
  try:
    rc = proc.wait(timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    raise
  if rc != 0:
    raise AssertionError(f"{' '.join(command(workdir, arg, *overrides))} exited {rc}:\n"
                         f"{log_tail(workdir)}")


def metrics(workdir: pathlib.Path) -> list[dict]:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  out = []
  for line in path.read_text().splitlines():
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      pass  # a line being written
  return out


def wait_for_lines(proc: subprocess.Popen, workdir: pathlib.Path, count: int,
                   timeout: float = 600) -> int:
  """Polls metrics.jsonl until it has `count` lines; returns the number seen."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    n = len(metrics(workdir))
    if n >= count:
      return n
    if proc.poll() is not None:
      raise AssertionError(f"the run exited ({proc.returncode}) after {n} metrics lines:\n"
                           f"{log_tail(workdir)}")
    time.sleep(0.02)
  proc.kill()
  raise AssertionError(f"no {count} metrics lines within {timeout} s:\n{log_tail(workdir)}")


def finalized_steps(workdir: pathlib.Path) -> list[int]:
  directory = workdir / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if \
      directory.exists() else []


@functools.cache
def sft_workdir() -> pathlib.Path:
  """The smoke SFT run (40 steps): the initial policy of every GRPO run."""
  workdir = scratch() / "sft"
  run(workdir, "job=sft")
  return workdir


def grpo_arg() -> str:
  return f"steps={GRPO_STEPS},init_from={sft_workdir()}"


@functools.cache
def reference_grpo() -> pathlib.Path:
  """The uninterrupted GRPO run the interrupted ones are compared with."""
  workdir = scratch() / "grpo_reference"
  run(workdir, grpo_arg(), *GRPO_OVERRIDES)
  return workdir


def assert_same_metrics(got: list[dict], want: list[dict]) -> None:
  """Step for step, every numeric field equal (to 1e-6), timing fields excepted."""
  assert [m["step"] for m in got] == [m["step"] for m in want]
  for g, w in zip(got, want):
    keys = {k for k in w if not k.startswith(TIMING_PREFIXES)}
    assert keys == {k for k in g if not k.startswith(TIMING_PREFIXES)}, (g["step"], keys)
    for k in sorted(keys):
      a, b = float(g[k]), float(w[k])
      same = (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
      assert same, f"step {w['step']} {k}: resumed {a} vs uninterrupted {b}"


def kill(proc: subprocess.Popen, sig: int) -> int:
  proc.send_signal(sig)
  return proc.wait(120)

