"""Tests for cesar_jax.eval.scaling: curves, bootstrap intervals, slopes, sweet spot."""

import json
import math

import numpy as np
import pytest

from cesar_jax.eval import scaling


def _sweep(correct, tokens=None, budgets=scaling.CESAR_BUDGETS):
  """SweepResults from dense bool[I, Bu, K] correctness (and optional tokens[I, Bu, K])."""
  correct = np.asarray(correct, bool)
  num_items, num_budgets, k = correct.shape
  item, budget, sample = np.meshgrid(np.arange(num_items), np.asarray(budgets), np.arange(k), indexing="ij")
  if tokens is None:
    tokens = np.zeros(correct.shape, int)
  return scaling.SweepResults(item.ravel(), budget.ravel(), sample.ravel(), correct.ravel(),
                              np.asarray(tokens).ravel())


def test_cesar_budgets():
  assert scaling.CESAR_BUDGETS == (0, 25, 50, 75, 100, 125, 150, 175, 200, 225, 250)


def test_exact_linear_curve_gives_exact_slope_and_degenerate_interval():
  # K = 10 samples; at budget 25*j exactly j are correct -> P(L) = 10 j % = 0.4 L points.
  budgets = np.array(scaling.CESAR_BUDGETS)
  correct = np.arange(10)[None, None, :] < (budgets // 25)[None, :, None]
  correct = np.broadcast_to(correct, (30, 11, 10))
  curve = scaling.scaling_curve(_sweep(correct), num_resamples=200)
  np.testing.assert_allclose(curve.accuracy, 0.4 * budgets, atol=1e-9)
  assert curve.slope_per_token == pytest.approx(0.4, abs=1e-12)
  assert curve.intercept == pytest.approx(0.0, abs=1e-9)
  # Every item is the same, so every resample gives the same curve.
  np.testing.assert_allclose(curve.ci_low, curve.accuracy, atol=1e-9)
  np.testing.assert_allclose(curve.ci_high, curve.accuracy, atol=1e-9)
  assert curve.slope_ci == pytest.approx((0.4, 0.4), abs=1e-9)
  assert curve.sweet_spot == 250 and curve.sweet_spot_accuracy == pytest.approx(100.0)
  assert curve.num_items == 30 and curve.samples_per_item == 10


def test_log_slope_on_a_curve_linear_in_log_budget():
  # log(1 + L) for L = 0, 1, 3, 7 is 0, ln2, 2 ln2, 3 ln2; P = 10, 20, 30, 40 %.
  budgets = [0, 1, 3, 7]
  correct = np.arange(10)[None, None, :] < np.array([1, 2, 3, 4])[None, :, None]
  curve = scaling.scaling_curve(_sweep(np.broadcast_to(correct, (5, 4, 10)), budgets=budgets),
                                num_resamples=50)
  assert curve.slope_per_log_token == pytest.approx(10 / math.log(2), rel=1e-12)
  assert curve.slope_log_ci == pytest.approx((10 / math.log(2),) * 2, rel=1e-9)
  # The plain slope is the ordinary least-squares one.
  assert curve.slope_per_token == pytest.approx(np.polyfit(budgets, [10, 20, 30, 40], 1)[0])


def test_slope_and_log_slope_match_polyfit_on_noisy_curve():
  rng = np.random.default_rng(3)
  correct = rng.random((40, 11, 3)) < 0.6
  curve = scaling.scaling_curve(_sweep(correct), num_resamples=100)
  budgets = np.array(scaling.CESAR_BUDGETS, float)
  beta, p0 = np.polyfit(budgets, curve.accuracy, 1)
  assert curve.slope_per_token == pytest.approx(beta) and curve.intercept == pytest.approx(p0)
  assert curve.slope_per_log_token == pytest.approx(np.polyfit(np.log1p(budgets), curve.accuracy, 1)[0])
  assert np.all(curve.ci_low <= curve.accuracy) and np.all(curve.accuracy <= curve.ci_high)
  assert curve.slope_ci[0] <= curve.slope_per_token <= curve.slope_ci[1]


def test_bootstrap_intervals_cover_the_truth():
  """Items of varying difficulty, true slope 0.1 pts/token: ~95% of intervals must cover it."""
  budgets = np.array(scaling.CESAR_BUDGETS)
  true_p = 0.5 + 0.001 * budgets  # mean over items of each item's probability
  covered_slope = covered_acc = 0
  trials = 20
  for seed in range(trials):
    rng = np.random.default_rng(100 + seed)
    offset = rng.uniform(-0.3, 0.3, size=(150, 1))
    offset -= offset.mean()  # the item population's mean is the truth
    p = np.clip(true_p[None, :] + offset, 0, 1)[..., None]
    correct = rng.random((150, 11, 4)) < p
    curve = scaling.scaling_curve(_sweep(correct), num_resamples=400, seed=seed)
    covered_slope += curve.slope_ci[0] <= 0.1 <= curve.slope_ci[1]
    covered_acc += curve.ci_low[5] <= 100 * true_p[5] <= curve.ci_high[5]
  assert covered_slope >= 16 and covered_acc >= 16


def test_bootstrap_is_seeded():
  rng = np.random.default_rng(0)
  sweep = _sweep(rng.random((30, 11, 2)) < 0.5)
  a = scaling.scaling_curve(sweep, num_resamples=100, seed=7)
  b = scaling.scaling_curve(sweep, num_resamples=100, seed=7)
  c = scaling.scaling_curve(sweep, num_resamples=100, seed=8)
  np.testing.assert_array_equal(a.ci_low, b.ci_low)
  assert a.slope_ci == b.slope_ci and a.slope_ci != c.slope_ci


def test_bootstrap_counts_are_item_resamples():
  counts = scaling.bootstrap_counts(num_items=7, num_resamples=2000, seed=0)
  assert counts.shape == (2000, 7) and counts.dtype.kind == "i"
  assert np.all(counts.sum(1) == 7)
  # Each item is drawn Binomial(7, 1/7) times: mean 1, P(never drawn) = (6/7)^7 = 0.34.
  assert abs(counts.mean() - 1.0) < 0.02
  assert abs((counts == 0).mean() - (6 / 7) ** 7) < 0.02
  values = np.arange(7.0)[:, None] * np.array([1.0, 2.0])
  means = scaling.bootstrap_means(values, 2000, seed=0)
  np.testing.assert_allclose(means, counts @ values / 7)


def test_sweet_spot_prefers_the_smallest_budget_on_ties():
  assert scaling.sweet_spot([0, 25, 50, 75], [50.0, 60.0, 60.0, 55.0]) == 25
  assert scaling.sweet_spot([0, 25, 50], [70.0, 60.0, 70.0]) == 0
  # In a curve: per-item accuracy 1/2, 2/2, 2/2 at budgets 0, 25, 50.
  correct = np.array([[[True, False], [True, True], [True, True]]] * 3)
  curve = scaling.scaling_curve(_sweep(correct, budgets=[0, 25, 50]), num_resamples=10)
  assert curve.sweet_spot == 25 and curve.sweet_spot_accuracy == 100.0


def test_items_weigh_the_same_and_tokens_are_averaged_per_item():
  # Item 0: two samples (one right, tokens 10 and 30); item 1: one sample (right, 5 tokens).
  sweep = scaling.SweepResults(item=np.array([0, 0, 1]), budget=np.array([25, 25, 25]),
                               sample=np.array([0, 1, 0]), correct=np.array([True, False, True]),
                               think_tokens=np.array([10, 30, 5]))
  curve = scaling.scaling_curve(sweep, num_resamples=10)
  assert curve.accuracy.tolist() == [75.0]                # mean(50, 100), not 2/3
  assert curve.mean_think_tokens.tolist() == [12.5]       # mean(20, 5)
  assert math.isnan(curve.slope_per_token)                 # one budget: no slope
  json.dumps(curve.to_dict())


def test_bad_sweeps_name_the_item_and_budget():
  dup = dict(item=[0, 0], budget=[25, 25], sample=[0, 0], correct=[True, True], think_tokens=[1, 1])
  with pytest.raises(ValueError, match="duplicate sweep rows for item 0, budget 25, sample 0"):
    scaling.scaling_curve(scaling.SweepResults(**{k: np.array(v) for k, v in dup.items()}))
  gap = dict(item=["q1", "q2", "q1"], budget=[0, 0, 25], sample=[0, 0, 0], correct=[1, 0, 1],
             think_tokens=[0, 0, 3])
  with pytest.raises(ValueError, match="item 'q2' has no sample at budget 25"):
    scaling.scaling_curve(scaling.SweepResults(**{k: np.array(v) for k, v in gap.items()}))
  with pytest.raises(KeyError, match=r"sweep record 0 lacks \['think_tokens'\]"):
    scaling.SweepResults.from_records([{"item": 0, "budget": 0, "sample": 0, "correct": True}])


def test_from_records_round_trip():
  records = [{"item": i, "budget": b, "sample": s, "correct": (i + s) % 2 == 0, "think_tokens": b}
             for i in range(4) for b in (0, 50) for s in range(2)]
  curve = scaling.scaling_curve(scaling.SweepResults.from_records(records), num_resamples=20)
  assert curve.accuracy.tolist() == [50.0, 50.0]
  assert curve.mean_think_tokens.tolist() == [0.0, 50.0]


def test_natural_overthinking_ranks_samples_by_length():
  # 3 items x 3 samples; correctness in order of increasing think tokens:
  #   item a: T T F, item b: T F F, item c: T T T  -> rank accuracy 100, 66.7, 33.3 %.
  item = np.array(["a", "a", "a", "b", "b", "b", "c", "c", "c"])
  tokens = np.array([50, 10, 90, 30, 20, 10, 5, 6, 7])
  correct = np.array([True, True, False, False, False, True, True, True, True])
  curve = scaling.natural_overthinking(item, correct, tokens, num_resamples=200)
  np.testing.assert_allclose(curve.accuracy, [100.0, 200 / 3, 100 / 3])
  np.testing.assert_allclose(curve.mean_think_tokens, [(10 + 10 + 5) / 3, (50 + 20 + 6) / 3, (90 + 30 + 7) / 3])
  assert curve.rank.tolist() == [0, 1, 2] and curve.num_items == 3
  assert curve.slope_per_used_token < 0
  assert curve.ci_low[0] == 100.0 and np.all(curve.ci_low <= curve.accuracy)
  with pytest.raises(ValueError, match="item 'b' has 2 samples"):
    scaling.natural_overthinking(item[:5], correct[:5], tokens[:5])


def test_one_seed_pooled_is_the_plain_curve_and_identical_seeds_change_nothing():
  rng = np.random.default_rng(5)
  sweep = _sweep(rng.random((30, 4, 3)) < 0.6, budgets=[0, 10, 20, 40])
  plain = scaling.scaling_curve(sweep, num_resamples=300, fixed_budget=20)
  pooled = scaling.pooled_curve([sweep], num_resamples=300, fixed_budget=20)
  assert json.dumps(plain.to_dict()) == json.dumps(pooled.to_dict())
  twice = scaling.pooled_curve([sweep, sweep], num_resamples=300, fixed_budget=20)
  np.testing.assert_allclose(twice.accuracy, plain.accuracy)
  np.testing.assert_allclose(twice.ci_low, plain.ci_low)
  assert twice.num_seeds == 2 and twice.slope_ci == pytest.approx(plain.slope_ci)
  assert plain.fixed_accuracy == pytest.approx(plain.accuracy[2])
  assert plain.fixed_ci == pytest.approx((plain.ci_low[2], plain.ci_high[2]))
  with pytest.raises(ValueError, match="fixed budget 30 is not among"):
    scaling.scaling_curve(sweep, num_resamples=10, fixed_budget=30)


def test_seed_level_widens_the_interval_when_seeds_disagree():
  rng = np.random.default_rng(6)
  good = _sweep(rng.random((40, 3, 4)) < 0.9, budgets=[0, 10, 20])
  bad = _sweep(rng.random((40, 3, 4)) < 0.3, budgets=[0, 10, 20])
  pooled = scaling.pooled_curve([good, bad], num_resamples=400)
  single = scaling.scaling_curve(good, num_resamples=400)
  assert 50 < pooled.accuracy.mean() < 70
  assert np.all(pooled.ci_high - pooled.ci_low > 2 * (single.ci_high - single.ci_low))
  other_items = _sweep(rng.random((39, 3, 4)) < 0.5, budgets=[0, 10, 20])
  with pytest.raises(ValueError, match="same items and budgets"):
    scaling.pooled_curve([good, other_items], num_resamples=10)


def test_sweet_spot_interval_is_tight_on_a_peak_and_wide_on_a_flat_curve():
  rng = np.random.default_rng(7)
  budgets = [0, 10, 20, 30, 40]
  peak = np.array([0.2, 0.3, 0.95, 0.3, 0.2])
  peaked = scaling.scaling_curve(
      _sweep(rng.random((60, 5, 4)) < peak[None, :, None], budgets=budgets), num_resamples=300)
  assert peaked.sweet_spot == 20 and tuple(peaked.sweet_spot_ci) == (20, 20)
  flat = scaling.scaling_curve(_sweep(rng.random((60, 5, 4)) < 0.5, budgets=budgets),
                               num_resamples=300)
  assert flat.sweet_spot_ci[1] - flat.sweet_spot_ci[0] >= 20
  assert flat.to_dict()["sweet_spot_ci"] == [int(v) for v in flat.sweet_spot_ci]


def test_used_token_slope_interval_covers_the_slope():
  rng = np.random.default_rng(8)
  budgets = np.array([0, 10, 20, 40])
  tokens = np.broadcast_to(budgets[None, :, None] // 2, (50, 4, 3)) + rng.integers(0, 3, (50, 4, 3))
  curve = scaling.scaling_curve(
      _sweep(rng.random((50, 4, 3)) < (0.3 + 0.01 * budgets)[None, :, None], tokens, budgets),
      num_resamples=300)
  lo, hi = curve.slope_used_ci
  assert lo < curve.slope_per_used_token < hi and lo > 0
