"""GRPO with the `mpar2` preset, through the real entry point: the perception reward rises.

The policy is SFT'd on traces that each claim one sound that is not in the clip (see
tests/rl/perception_smoke_config.py, which gives the numbers measured, with the control); the
host-side `perception` reward checks the chains' claims against the clip's ground-truth
events. ~70-120 s on 2 cores (SFT 150 steps, GRPO 40 steps), hence `slow`.
"""

import numpy as np
import pytest

import smoke_runs as R

pytestmark = pytest.mark.slow
CONFIG = "tests/rl/perception_smoke_config.py"


def test_mpar2_perception_reward_rises(monkeypatch):
  monkeypatch.setattr(R, "CONFIG", CONFIG)
  sft, workdir = R.scratch() / "perception_sft", R.scratch() / "perception_grpo"
  R.run(sft, "job=sft")
  R.run(workdir, f"init_from={sft}")
  grpo = R.metrics(workdir)
  assert [m["step"] for m in grpo] == list(range(40))
  for key in ("reward/perception", "reward/answer_consistency", "reward/accuracy",
              "reward/format", "time/rewards"):
    assert all(np.isfinite(m[key]) for m in grpo), key
  fifth = len(grpo) // 5
  mean = lambda key, rows: float(np.mean([m[key] for m in rows]))
  before, after = mean("reward/perception", grpo[:fifth]), mean("reward/perception", grpo[-fifth:])
  # Measured: 0.96 -> 1.26; a clean trace scores 1.5 (precision 1 + 0.5 * recall 1).
  assert after > before + 0.15, (before, after)
  assert 0.0 <= before and after <= 1.5
