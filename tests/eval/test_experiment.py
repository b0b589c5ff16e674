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


def _chains(decay_per_token, seed, items=30, per_item=6, base=0.95):
  """Chains whose precision falls by `decay_per_token` (fraction) per think token, plus noise."""
  rng = np.random.default_rng(seed)
  item = np.repeat(np.arange(items), per_item)
  tokens = rng.uniform(10, 120, item.size)
  precision = np.clip(base - decay_per_token * tokens + rng.normal(0, 0.05, item.size), 0, 1)
  return item, tokens, precision


def test_perception_decay_is_the_least_squares_slope_in_points_per_100_tokens():
  item, x, y = _chains(0.002, 0)
  d = experiment.perception_decay([(item, x, y)], num_items=30, num_resamples=300)
  assert d["slope_per_100_tokens"] == pytest.approx(1e4 * np.polyfit(x, y, 1)[0])
  assert d["mean_precision"] == pytest.approx(100 * y.mean())
  assert d["num_chains"] == item.size
  lo, hi = d["slope_ci"]
  assert lo < d["slope_per_100_tokens"] < hi and hi < -10  # truth: -20 points per 100 tokens
  # A flat chain set: the interval covers 0.
  flat = experiment.perception_decay([_chains(0.0, 1)], num_items=30, num_resamples=300)
  assert flat["slope_ci"][0] < 0 < flat["slope_ci"][1]
  # Seeds pooled: two seeds' chains weigh as one set.
  both = experiment.perception_decay([(item, x, y), _chains(0.002, 2)], num_items=30,
                                     num_resamples=100)
  xs = np.concatenate([x, _chains(0.002, 2)[1]])
  ys = np.concatenate([y, _chains(0.002, 2)[2]])
  assert both["slope_per_100_tokens"] == pytest.approx(1e4 * np.polyfit(xs, ys, 1)[0])


def test_compare_perception_finds_a_slower_decay_and_zero_for_identical_arms():
  decaying = [_chains(0.003, s) for s in (0, 1)]
  steady = [_chains(0.0005, s) for s in (2, 3)]
  c = experiment.compare_perception(decaying, steady, num_items=30, num_resamples=300)
  assert c["decay_diff_ci"][0] > 10  # truth: +25 points per 100 tokens
  assert c["precision_diff"] > 0 and c["seeds"] == [2, 2]
  same = experiment.compare_perception(decaying, decaying, num_items=30, num_resamples=100)
  assert same["decay_diff"] == 0 and same["precision_diff"] == 0
  assert same["decay_diff_ci"][0] <= 0 <= same["decay_diff_ci"][1]


def test_perception_decay_bad_input_names_the_problem():
  item, x, y = _chains(0.001, 0)
  with pytest.raises(ValueError, match="item indices outside \\[0, 10\\)"):
    experiment.perception_decay([(item, x, y)], num_items=10)
  with pytest.raises(ValueError, match="non-finite"):
    experiment.perception_decay([(item, x, np.where(item == 3, np.nan, y))], num_items=30)
  with pytest.raises(ValueError, match="one length"):
    experiment.perception_decay([(item, x[:-1], y)], num_items=30)
