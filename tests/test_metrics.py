"""Metrics writer: jsonl contents, resume truncation, TensorBoard events read back, console line."""

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from cesar_jax import metrics as metrics_lib


def _write(workdir, steps, resume_step=None, scale=1.0, **kwargs):
  with metrics_lib.MetricsWriter(workdir, total_steps=10, resume_step=resume_step, progress=False,
                                 **kwargs) as writer:
    for step in steps:
      writer.write(step, {"loss": jnp.float32(step * scale), "count": np.int32(step),
                          "flag": True})


def test_jsonl_one_object_per_step(tmp_path, capsys):
  _write(tmp_path, [0, 1, 2])
  rows = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in rows] == [0, 1, 2]
  assert [r["loss"] for r in rows] == [0.0, 1.0, 2.0]
  assert rows[2]["count"] == 2 and isinstance(rows[2]["count"], int) and rows[2]["flag"] == 1
  assert "perf/seconds_per_step" not in rows[0] and rows[1]["perf/seconds_per_step"] >= 0
  out = capsys.readouterr().out.splitlines()
  assert out[0] == "step 0/10 | loss 0 | count 0 | flag 1"
  assert out[2].startswith("step 2/10 | loss 2 | count 2 | flag 1 | perf/seconds_per_step ")


def test_resume_drops_lines_after_the_restored_step(tmp_path):
  _write(tmp_path, range(6))  # crashed after writing step 5; the last checkpoint was step 3
  path = tmp_path / "metrics.jsonl"
  with open(path, "a") as f:
    f.write('{"step": 6, "loss": 6.')  # a line cut short by the crash
  _write(tmp_path, range(4, 8), resume_step=3, scale=10.0)
  rows = metrics_lib.read_jsonl(path)
  assert [r["step"] for r in rows] == list(range(8))
  # Steps 0-3 from the first run, 4-7 from the resumed one (scale 10).
  assert [r["loss"] for r in rows] == [0, 1, 2, 3, 40, 50, 60, 70]
  # A fresh start (nothing restored) in the same workdir starts the file over.
  _write(tmp_path, [0], resume_step=None)
  assert [r["step"] for r in metrics_lib.read_jsonl(path)] == [0]


def test_tensorboard_events_read_back_with_purge(tmp_path):
  _write(tmp_path, range(6))
  _write(tmp_path, range(4, 8), resume_step=3, scale=10.0)
  logdir = tmp_path / "tensorboard"
  assert len([f for f in os.listdir(logdir) if "tfevents" in f]) == 2
  scalars = metrics_lib.read_tensorboard_scalars(logdir)
  assert scalars["loss"] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0),
                             (6, 60.0), (7, 70.0)]
  assert [s for s, _ in scalars["count"]] == list(range(8))


def test_non_finite_and_bad_values(tmp_path):
  with metrics_lib.MetricsWriter(tmp_path, progress=False, console_every=0) as writer:
    writer.write(0, {"loss": jnp.float32(jnp.nan), "kl": math.inf})
    with pytest.raises(ValueError, match="step 1.*'hist'.*shape \\(3,\\)"):
      writer.write(1, {"hist": jnp.zeros(3)})
    with pytest.raises(ValueError, match="step -1 is before.*0"):
      writer.write(-1, {"loss": 1.0})
  text = (tmp_path / "metrics.jsonl").read_text()
  assert text == '{"step": 0, "loss": NaN, "kl": Infinity}\n'
  row = json.loads(text)
  assert math.isnan(row["loss"]) and row["kl"] == math.inf


def test_non_chief_writes_nothing(tmp_path):
  with metrics_lib.MetricsWriter(tmp_path / "run", progress=False, is_chief=False) as writer:
    values = writer.write(0, {"loss": 1.5})
  assert values == {"loss": 1.5}
  assert not (tmp_path / "run").exists()


def test_console_keys_and_progress_bar(tmp_path, capsys):
  with metrics_lib.MetricsWriter(tmp_path, total_steps=4, console_every=2,
                                 console_keys=["loss"], tensorboard=False) as writer:
    for step in range(4):
      writer.write(step, {"loss": 0.123456, "other": 1.0})
  captured = capsys.readouterr()
  assert captured.out.splitlines() == ["step 0/4 | loss 0.1235", "step 2/4 | loss 0.1235"]
  assert "4/4" in captured.err  # the tqdm bar reached the end
  assert not (tmp_path / "tensorboard").exists()
