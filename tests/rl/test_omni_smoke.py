"""SFT then GRPO through `python -m cesar_jax.main` on the tiny Qwen2.5-Omni thinker
(configs/smoke.py:arch=omni), in subprocesses: the jobs run unchanged on the other architecture.

Two real training jobs (~60 s each on 2 cores, most of it compiling), hence `slow`. Measured
once (2026-12-01): SFT loss 6.64 -> 0.59 in 40 steps; GRPO format_rate 0.44, 0.50 in the first
two steps, 0.75-0.88 in the last three of six.
"""

import json

import numpy as np
import pytest

import smoke_runs as R

pytestmark = pytest.mark.slow


def test_sft_then_grpo_on_the_omni_thinker():
  sft_dir = R.scratch() / "omni_sft"
  R.run(sft_dir, "job=sft,arch=omni")
  model_config = json.loads((sft_dir / "model_config.json").read_text())
  assert model_config["arch"] == "qwen2_5_omni" and model_config["audio"]["n_window"] == 50
  sft = R.metrics(sft_dir)
  assert [m["step"] for m in sft] == list(range(40))
  assert sft[0]["loss"] > 6.0 and np.mean([m["loss"] for m in sft[-5:]]) < 1.5  # the format

  grpo_dir = R.scratch() / "omni_grpo"
  R.run(grpo_dir, f"arch=omni,steps=6,init_from={sft_dir}", "--config.checkpoint_every=3")
  grpo = R.metrics(grpo_dir)
  assert [m["step"] for m in grpo] == list(range(6))
  for m in grpo:
    assert np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"]) and m["grad_norm"] > 0
    assert m["optim/skipped_steps"] == 0
  before = np.mean([m["format_rate"] for m in grpo[:2]])
  after = np.mean([m["format_rate"] for m in grpo[-3:]])
  assert after > before + 0.15, (before, after)  # the policy learns the answer-only format
  assert "update compiled 1 time(s)" in R.log_tail(grpo_dir, 10**6)
  assert json.loads((grpo_dir / "model_config.json").read_text())["arch"] == "qwen2_5_omni"
