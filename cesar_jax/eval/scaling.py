"""Test-time-scaling statistics: accuracy vs think budget, bootstrap intervals, slopes.

Pure numpy. The seam for the sampling sweep: collect one row per (item, budget, sample) into
`SweepResults` and call `scaling_curve`; for unconstrained samples call
`natural_overthinking`. All accuracies are in percent, so slopes are in accuracy points per
token, as CESAR reports them.

Bootstrap: items are resampled with replacement (the unit of variation is the question, not
the sample), the same resamples for every budget and for the slopes. A resample of n items is
drawn as multinomial counts c[r, i] (how often item i is drawn in resample r), so every
statistic of every resample is one matrix product, with no Python loop over resamples. Curves
pooled over training seeds (`pooled_curve`: S runs of one recipe swept on the same items)
resample seeds too, with counts d[r, s]: two levels, seeds then items, so the interval holds
both sources of variation (with 2 seeds the seed level is coarse; the report says how many).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

# CESAR's test-time scaling protocol: L_max from 0 to 250 think tokens in steps of 25
# (Fan et al., arXiv 2510.20867; REFERENCES.md).
CESAR_BUDGETS = tuple(range(0, 251, 25))


@dataclasses.dataclass(frozen=True)
class SweepResults:
  """One row per generated sample: N rows.

  Attributes:
    item: [N] item identifier (ints or strings).
    budget: int[N] think budget L_max the sample was generated under.
    sample: int[N] sample index within (item, budget), 0..K-1.
    correct: bool[N] whether the answer was scored correct.
    think_tokens: int[N] think tokens actually used.
  """

  item: np.ndarray
  budget: np.ndarray
  sample: np.ndarray
  correct: np.ndarray
  think_tokens: np.ndarray

  def __post_init__(self):
    arrays = {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}
    n = arrays["item"].shape
    for name, array in arrays.items():
      if array.ndim != 1 or array.shape != n:
        raise ValueError(f"SweepResults.{name} has shape {array.shape}; all fields must be 1-D of shape {n}")
      object.__setattr__(self, name, array)
    if n[0] == 0:
      raise ValueError("SweepResults is empty")

  @classmethod
  def from_records(cls, records: Iterable[Mapping[str, Any]]) -> "SweepResults":
    """From dicts with keys item, budget, sample, correct, think_tokens."""
    records = list(records)
    names = [f.name for f in dataclasses.fields(cls)]
    for index, record in enumerate(records):
      missing = [name for name in names if name not in record]
      if missing:
        raise KeyError(f"sweep record {index} lacks {missing}")
    return cls(**{name: np.array([r[name] for r in records]) for name in names})

  def grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dense layout -> (items [I], budgets [Bu] ascending, correct f64[I, Bu, K], tokens f64[I, Bu, K], mask bool[I, Bu, K])."""
    items, item_pos = np.unique(self.item, return_inverse=True)
    budgets, budget_pos = np.unique(self.budget, return_inverse=True)
    samples, sample_pos = np.unique(self.sample, return_inverse=True)
    shape = (len(items), len(budgets), len(samples))
    flat = np.ravel_multi_index((item_pos, budget_pos, sample_pos), shape)
    unique_flat, counts = np.unique(flat, return_counts=True)
    if np.any(counts > 1):
      i, b, s = np.unravel_index(unique_flat[counts > 1][0], shape)
      raise ValueError(f"duplicate sweep rows for item {items[i].item()!r}, budget {budgets[b]}, sample {samples[s]}")
    mask = np.zeros(shape, bool)
    correct = np.zeros(shape)
    tokens = np.zeros(shape)
    mask.flat[flat] = True
    correct.flat[flat] = self.correct.astype(float)
    tokens.flat[flat] = self.think_tokens.astype(float)
    empty = ~mask.any(-1)
    if empty.any():
      i, b = np.argwhere(empty)[0]
      raise ValueError(f"item {items[i].item()!r} has no sample at budget {budgets[b]}")
    return items, budgets, correct, tokens, mask


@dataclasses.dataclass(frozen=True)
class ScalingCurve:
  """Accuracy vs think budget for one model; accuracies in percent.

  slope_per_token: beta of the least-squares fit P(L) = P0 + beta * L, points per token.
  slope_per_log_token: the same fit against log(1 + L), points per unit of natural log, so
    budget 0 sits at x = 0.
  slope_per_used_token: the fit against mean think tokens actually used (Gema et al.).
  *_ci: bootstrap percentile interval of the slope (same item resamples as the curve).
  sweet_spot: L* = argmax_L P(L), the smallest such budget on ties.
  sweet_spot_ci: percentile interval of L* over the bootstrap resamples (budgets), so a flat
    curve shows as a wide interval rather than as the max of noisy points.
  fixed_budget / fixed_accuracy / fixed_ci: P at a budget named in advance (None if not
    asked), with its interval.
  slope_used_ci: interval of `slope_per_used_token` (x = mean think tokens of the resample).
  num_seeds: training runs pooled (1: one model).
  """

  budgets: np.ndarray  # int[Bu]
  accuracy: np.ndarray  # f64[Bu], percent
  ci_low: np.ndarray  # f64[Bu]
  ci_high: np.ndarray  # f64[Bu]
  mean_think_tokens: np.ndarray  # f64[Bu]
  slope_per_token: float
  slope_ci: tuple[float, float]
  intercept: float
  slope_per_log_token: float
  slope_log_ci: tuple[float, float]
  slope_per_used_token: float
  sweet_spot: int
  sweet_spot_accuracy: float
  num_items: int
  samples_per_item: int
  confidence: float
  num_resamples: int
  slope_used_ci: tuple[float, float] = (float("nan"), float("nan"))
  sweet_spot_ci: tuple[float, float] = (float("nan"), float("nan"))
  fixed_budget: int | None = None
  fixed_accuracy: float | None = None
  fixed_ci: tuple[float, float] | None = None
  num_seeds: int = 1

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready dict (lists and floats)."""
    out = {}
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      out[f.name] = value.tolist() if isinstance(value, np.ndarray) else (
          [float(v) for v in value] if isinstance(value, tuple) else value)
    out["sweet_spot_ci"] = [int(v) if np.isfinite(v) else None for v in self.sweet_spot_ci]
    return out


def bootstrap_counts(num_items: int, num_resamples: int, seed: int) -> np.ndarray:
  """int[R, I]: row r holds how often each item is drawn in resample r (rows sum to I)."""
  rng = np.random.default_rng(seed)
  return rng.multinomial(num_items, np.full(num_items, 1.0 / num_items), size=num_resamples)


def bootstrap_means(values: np.ndarray, num_resamples: int, seed: int) -> np.ndarray:
  """f64[R, ...]: the item mean of `values` [I, ...] under each item resample."""
  counts = bootstrap_counts(values.shape[0], num_resamples, seed)
  return np.tensordot(counts, values, axes=1) / values.shape[0]


def _percentile_interval(stats: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
  """Percentile interval over axis 0 of f64[R, ...]; NaN-safe."""
  alpha = 100.0 * (1.0 - confidence) / 2.0
  stats = np.asarray(stats, float)
  if np.isnan(stats).all(axis=0).any():  # an undefined statistic (e.g. a flat x): NaN, quietly
    with np.errstate(all="ignore"), warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      return (np.nanpercentile(stats, alpha, axis=0),
              np.nanpercentile(stats, 100.0 - alpha, axis=0))
  return np.nanpercentile(stats, alpha, axis=0), np.nanpercentile(stats, 100.0 - alpha, axis=0)


def linear_slope(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Least-squares (slope, intercept) of y[..., n] against x[n]; NaN when x is constant."""
  x = np.asarray(x, float)
  y = np.asarray(y, float)
  dx = x - x.mean()
  ss = float(dx @ dx)
  if ss == 0.0:
    nan = np.full(y.shape[:-1], np.nan)
    return nan, nan
  slope = (y - y.mean(-1, keepdims=True)) @ dx / ss
  return slope, y.mean(-1) - slope * x.mean()


def sweet_spot(budgets: np.ndarray, accuracy: np.ndarray, atol: float = 1e-9) -> int:
  """L* = argmax accuracy over ascending `budgets`; the smallest budget among ties."""
  accuracy = np.asarray(accuracy, float)
  return int(np.asarray(budgets)[np.flatnonzero(accuracy >= accuracy.max() - atol)[0]])


def item_grid(results: SweepResults) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
  """(items [I], budgets [Bu], item accuracy f64[I, Bu] in %, item mean think tokens f64[I, Bu],
  max samples per cell): each item's mean over its K samples."""
  items, budgets, correct, tokens, mask = results.grid()
  count = mask.sum(-1)
  return (items, budgets, 100.0 * correct.sum(-1) / count, tokens.sum(-1) / count,
          int(count.max()))


def stack_seeds(runs: Sequence[SweepResults]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  """S sweeps of one recipe (one per training seed) on the same items and budgets ->
  (budgets [Bu], accuracy f64[S, I, Bu], tokens f64[S, I, Bu], samples per item)."""
  if not runs:
    raise ValueError("stack_seeds needs at least one sweep")
  grids = [item_grid(r) for r in runs]
  items, budgets = grids[0][0], grids[0][1]
  for s, g in enumerate(grids[1:], 1):
    if not (np.array_equal(g[0], items) and np.array_equal(g[1], budgets)):
      raise ValueError(f"sweep {s} has items/budgets {g[0].tolist()[:5]}.../{g[1].tolist()} "
                       f"unlike sweep 0 ({items.tolist()[:5]}.../{budgets.tolist()}): pooled "
                       "seeds must be swept on the same items and budgets")
  return (budgets, np.stack([g[2] for g in grids]), np.stack([g[3] for g in grids]),
          max(g[4] for g in grids))


def resample_counts(num_items: int, num_seeds: int, num_resamples: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(item counts int[R, I], seed counts int[R, S]); one seed: counts of 1 (nothing to draw)."""
  items = bootstrap_counts(num_items, num_resamples, seed)
  seeds = (np.ones((num_resamples, 1), np.int64) if num_seeds == 1
           else bootstrap_counts(num_seeds, num_resamples, seed + 7919))
  return items, seeds


def resampled_means(values: np.ndarray, item_counts: np.ndarray,
                    seed_counts: np.ndarray) -> np.ndarray:
  """f64[R, Bu]: mean over seeds and items of `values` [S, I, Bu] under each two-level resample."""
  s, i = values.shape[:2]
  return np.einsum("rs,ri,sib->rb", seed_counts, item_counts, values, optimize=True) / (s * i)


def slopes_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Least-squares slope of each row y[r] on x[r] (f64[R, n] each, or x [n]); NaN if x is flat."""
  x = np.broadcast_to(np.asarray(x, float), np.shape(y))
  dx = x - x.mean(-1, keepdims=True)
  ss = np.sum(dx * dx, -1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(ss > 0, np.sum(dx * (y - y.mean(-1, keepdims=True)), -1) / ss, np.nan)


def scaling_curve(
    results: SweepResults,
    num_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    fixed_budget: int | None = None,
) -> ScalingCurve:
  """Per-budget accuracy P(L_max) with bootstrap intervals over items, slopes, sweet spot.

  P(L) is the mean over items of the per-item mean over its K samples (items weigh the same
  whatever their K). Mean think tokens are averaged the same way.
  """
  return pooled_curve([results], num_resamples, seed, confidence, fixed_budget)


def pooled_curve(
    runs: Sequence[SweepResults],
    num_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    fixed_budget: int | None = None,
) -> ScalingCurve:
  """`scaling_curve` of S training seeds of one recipe pooled: P(L) is the mean over seeds of
  the seeds' P(L); intervals from the two-level bootstrap (seeds, then items)."""
  budgets, acc, tok, k = stack_seeds(runs)
  num_seeds, num_items = acc.shape[:2]
  item_counts, seed_counts = resample_counts(num_items, num_seeds, num_resamples, seed)
  accuracy = acc.mean((0, 1))
  mean_tokens = tok.mean((0, 1))
  boot_acc = resampled_means(acc, item_counts, seed_counts)  # [R, Bu]
  boot_tok = resampled_means(tok, item_counts, seed_counts)
  ci_low, ci_high = _percentile_interval(boot_acc, confidence)

  x = budgets.astype(float)
  log_x = np.log1p(x)
  slope, intercept = linear_slope(x, accuracy)
  slope_log, _ = linear_slope(log_x, accuracy)
  slope_used, _ = linear_slope(mean_tokens, accuracy)
  nan2 = (np.nan, np.nan)
  several = len(budgets) > 1
  slope_ci = _percentile_interval(linear_slope(x, boot_acc)[0], confidence) if several else nan2
  slope_log_ci = (_percentile_interval(linear_slope(log_x, boot_acc)[0], confidence)
                  if several else nan2)
  slope_used_ci = (_percentile_interval(slopes_rows(boot_tok, boot_acc), confidence)
                   if several else nan2)
  boot_best = budgets[np.argmax(boot_acc, axis=1)].astype(float)  # smallest on ties
  alpha = 100.0 * (1.0 - confidence) / 2.0
  best_ci = tuple(float(v) for v in np.percentile(boot_best, [alpha, 100 - alpha],
                                                  method="inverted_cdf"))
  fixed = fixed_ci = None
  if fixed_budget is not None:
    where = np.flatnonzero(budgets == fixed_budget)
    if not where.size:
      raise ValueError(f"fixed budget {fixed_budget} is not among the swept budgets "
                       f"{budgets.tolist()}")
    fixed = float(accuracy[where[0]])
    fixed_ci = (float(ci_low[where[0]]), float(ci_high[where[0]]))

  best = sweet_spot(budgets, accuracy)
  return ScalingCurve(
      budgets=budgets.astype(int),
      accuracy=accuracy,
      ci_low=ci_low,
      ci_high=ci_high,
      mean_think_tokens=mean_tokens,
      slope_per_token=float(slope),
      slope_ci=(float(slope_ci[0]), float(slope_ci[1])),
      intercept=float(intercept),
      slope_per_log_token=float(slope_log),
      slope_log_ci=(float(slope_log_ci[0]), float(slope_log_ci[1])),
      slope_per_used_token=float(slope_used),
      sweet_spot=best,
      sweet_spot_accuracy=float(accuracy[np.flatnonzero(budgets == best)[0]]),
      num_items=num_items,
      samples_per_item=k,
      confidence=confidence,
      num_resamples=num_resamples,
      slope_used_ci=(float(slope_used_ci[0]), float(slope_used_ci[1])),
      sweet_spot_ci=best_ci,
      fixed_budget=None if fixed_budget is None else int(fixed_budget),
      fixed_accuracy=fixed,
      fixed_ci=fixed_ci,
      num_seeds=num_seeds,
  )


@dataclasses.dataclass(frozen=True)
class RankCurve:
  """Natural overthinking: accuracy by reasoning-length rank (0 = shortest of the K samples)."""

  rank: np.ndarray  # int[K]
  accuracy: np.ndarray  # f64[K], percent
  ci_low: np.ndarray  # f64[K]
  ci_high: np.ndarray  # f64[K]
  mean_think_tokens: np.ndarray  # f64[K]
  slope_per_used_token: float  # fit of accuracy against mean_think_tokens
  num_items: int

  def to_dict(self) -> dict[str, Any]:
    return {f.name: (v.tolist() if isinstance(v := getattr(self, f.name), np.ndarray) else v)
            for f in dataclasses.fields(self)}


def natural_overthinking(
    item: np.ndarray,
    correct: np.ndarray,
    think_tokens: np.ndarray,
    num_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> RankCurve:
  """Gema et al. (arXiv 2507.14417) natural overthinking: K unconstrained samples per item.

  Each item's samples are ranked by think tokens used (ties keep input order); the curve is
  the accuracy at each rank over items, with a bootstrap interval over items.

  Args:
    item: [N] item identifiers; every item must have the same number K of samples.
    correct: bool[N].
    think_tokens: int[N].
  """
  item = np.asarray(item)
  items, pos, counts = np.unique(item, return_inverse=True, return_counts=True)
  if np.any(counts != counts[0]):
    bad = int(np.flatnonzero(counts != counts[0])[0])
    raise ValueError(f"item {items[bad].item()!r} has {counts[bad]} samples, item {items[0].item()!r} has {counts[0]}; "
                     "natural overthinking needs the same K for every item")
  k = int(counts[0])
  # Sort by (item, think tokens, input order): each item's K samples become one row.
  order = np.lexsort((np.arange(len(item)), np.asarray(think_tokens), pos))
  rows_correct = 100.0 * np.asarray(correct, float)[order].reshape(len(items), k)  # [I, K]
  rows_tokens = np.asarray(think_tokens, float)[order].reshape(len(items), k)
  accuracy = rows_correct.mean(0)
  mean_tokens = rows_tokens.mean(0)
  boot = bootstrap_means(rows_correct, num_resamples, seed)  # [R, K]
  ci_low, ci_high = _percentile_interval(boot, confidence)
  slope, _ = linear_slope(mean_tokens, accuracy)
  return RankCurve(
      rank=np.arange(k), accuracy=accuracy, ci_low=ci_low, ci_high=ci_high,
      mean_think_tokens=mean_tokens, slope_per_used_token=float(slope), num_items=len(items))
