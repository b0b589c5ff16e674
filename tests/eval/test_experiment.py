"""Arm comparisons (paired items, per-arm seeds) and the first/last-fifth training summary."""

import json

import numpy as np
import pytest

from cesar_jax.eval import experiment, scaling


def _sweep(p_of_budget, seed, items=40, budgets=(0, 16, 32, 64), k=4):
  rng = np.random.default_rng(seed)
  item, budget, sample = np.meshgrid(np.arange(items), np.asarray(budgets), np.arange(k),
                                     indexing="ij")
  correct = rng.random(item.shape) < p_of_budget(budget)
  return scaling.SweepResults(item.ravel(), budget.ravel(), sample.ravel(), correct.ravel(),
                              budget.ravel())


def test_identical_arms_differ_by_exactly_zero():
  runs = [_sweep(lambda b: 0.4 + 0.004 * b, s) for s in (0, 1)]
  c = experiment.compare_arms(runs, runs, fixed_budget=32, num_resamples=200)
  assert c["slope_diff"] == 0 and c["accuracy_diff"] == 0
  # Seeds are resampled per arm, so the interval is not degenerate, but it straddles 0.
  assert c["slope_diff_ci"][0] <= 0 <= c["slope_diff_ci"][1]


def test_a_constructed_difference_is_found_with_the_right_sign():
  flat = [_sweep(lambda b: 0.5 + 0 * b, s) for s in (0, 1)]
  rising = [_sweep(lambda b: 0.3 + 0.008 * b, s) for s in (2, 3)]
  c = experiment.compare_arms(flat, rising, fixed_budget=64, num_resamples=300)
  means = [scaling.pooled_curve(r, num_resamples=10) for r in (flat, rising)]
  assert c["slope_diff"] == pytest.approx(means[1].slope_per_token - means[0].slope_per_token)
  assert c["accuracy_diff"] == pytest.approx(means[1].accuracy[-1] - means[0].accuracy[-1])
  assert c["slope_diff_ci"][0] > 0.4 and c["accuracy_diff_ci"][0] > 10  # truth: 0.8, 31
  with pytest.raises(ValueError, match="fixed budget 50"):
    experiment.compare_arms(flat, rising, fixed_budget=50, num_resamples=10)
  with pytest.raises(ValueError, match="different budgets or items"):
    experiment.compare_arms(flat, [_sweep(lambda b: 0.5 + 0 * b, 4, items=30)], fixed_budget=64)


def test_training_summary_first_and_last_fifth(tmp_path):
  files = []
  for seed, offset in enumerate((0.0, 0.2)):
    path = tmp_path / f"m{seed}.jsonl"
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
      for step in range(50):
        f.write(json.dumps({"step": step, "reward/total": offset + step / 50 + 0.01 * rng.normal(),
                            "reward/format": 1.0, "reward/total_std": 3.0,
                            "loss": 0.1}) + "\n")
    files.append(str(path))
  out = experiment.training_summary(files, num_resamples=300)
  assert set(out) == {"total", "format"}
  t = out["total"]
  # First fifth: steps 0-9, mean 0.09 (+0.1 averaged offset); last: steps 40-49, mean 0.89.
  assert t["first"] == pytest.approx(0.19, abs=0.01) and t["last"] == pytest.approx(0.99, abs=0.01)
  assert t["steps_per_fifth"] == 10 and len(t["per_seed"]) == 2
  assert t["ci"][0] > 0.7 and t["ci"][1] < 0.9
  assert out["format"]["diff"] == 0 and out["format"]["ci"] == [0.0, 0.0]
