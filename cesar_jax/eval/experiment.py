"""The demo's experiment statistics: arms pooled over seeds, CESAR minus outcome, training moves.

Pure numpy, on top of `scaling` (the same bootstrap conventions):

* `compare_arms`: arm B minus arm A (e.g. CESAR minus outcome), the slope of accuracy on the
  think budget and the accuracy at a budget fixed in advance, with a bootstrap interval. The
  arms were swept on the same items, so items are resampled once for both (a paired
  comparison); each arm's seeds are resampled independently.
* `training_summary`: per reward component, the mean over the first and the last fifth of
  GRPO steps (from each seed's metrics.jsonl), pooled over seeds, with a bootstrap interval of
  the change (steps resampled within each fifth and seed: each step's value is the mean over
  its own freshly sampled batch).
* `perception_decay` / `compare_perception`: the perception-decay curve as one number, the
  least-squares slope of a chain's claim precision on its think tokens (precision points per
  100 tokens, over chains that make a claim), with the item bootstrap (seeds pooled at two
  levels), and arm B minus arm A of that slope and of the mean precision, items paired.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cesar_jax.eval import plots, scaling


def _interval(stats: np.ndarray, confidence: float) -> list[float]:
  alpha = 100.0 * (1.0 - confidence) / 2.0
  return [float(v) for v in np.nanpercentile(stats, [alpha, 100.0 - alpha])]


def compare_arms(arm_a: Sequence[scaling.SweepResults], arm_b: Sequence[scaling.SweepResults], *,
                 fixed_budget: int, num_resamples: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> dict[str, Any]:
  """B minus A: slope (points per token) and accuracy at `fixed_budget` (points), pooled over
  each arm's seeds; intervals from the paired-item, per-arm-seed bootstrap."""
  budgets_a, acc_a, _, _ = scaling.stack_seeds(arm_a)
  budgets_b, acc_b, _, _ = scaling.stack_seeds(arm_b)
  if not np.array_equal(budgets_a, budgets_b) or acc_a.shape[1] != acc_b.shape[1]:
    raise ValueError(f"compare_arms: the arms were swept on different budgets or items "
                     f"({budgets_a.tolist()} x {acc_a.shape[1]} vs {budgets_b.tolist()} x "
                     f"{acc_b.shape[1]})")
  where = np.flatnonzero(budgets_a == fixed_budget)
  if not where.size:
    raise ValueError(f"fixed budget {fixed_budget} is not among the swept budgets "
                     f"{budgets_a.tolist()}")
  num_items = acc_a.shape[1]
  items, seeds_a = scaling.resample_counts(num_items, acc_a.shape[0], num_resamples, seed)
  _, seeds_b = scaling.resample_counts(num_items, acc_b.shape[0], num_resamples, seed + 1)
  boot_a = scaling.resampled_means(acc_a, items, seeds_a)
  boot_b = scaling.resampled_means(acc_b, items, seeds_b)
  x = budgets_a.astype(float)
  mean_a, mean_b = acc_a.mean((0, 1)), acc_b.mean((0, 1))
  slope_diff = scaling.linear_slope(x, mean_b)[0] - scaling.linear_slope(x, mean_a)[0]
  boot_slope = scaling.linear_slope(x, boot_b)[0] - scaling.linear_slope(x, boot_a)[0]
  i = where[0]
  return {
      "slope_diff": float(slope_diff),
      "slope_diff_ci": _interval(boot_slope, confidence),
      "accuracy_diff": float(mean_b[i] - mean_a[i]),
      "accuracy_diff_ci": _interval(boot_b[:, i] - boot_a[:, i], confidence),
      "fixed_budget": int(fixed_budget),
      "num_items": int(num_items),
      "seeds": [int(acc_a.shape[0]), int(acc_b.shape[0])],
  }


# One model's (one seed's) chains: (item index int[n], think tokens f[n], precision f[n]).
Chains = tuple[np.ndarray, np.ndarray, np.ndarray]


def _decay_resampled(chains: Sequence[Chains], item_counts: np.ndarray,
                     seed_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(slope f64[R] in points per 100 tokens, mean precision f64[R]) under each resample.

  Each chain weighs as often as its item and its seed are drawn (weighted least squares):
  item_counts int[R, I], seed_counts int[R, S], one entry of `chains` per seed.
  """
  if len(chains) != seed_counts.shape[1]:
    raise ValueError(f"{len(chains)} seeds of chains but seed counts for {seed_counts.shape[1]}")
  r = item_counts.shape[0]
  sw, sx, sy, sxx, sxy = (np.zeros(r) for _ in range(5))
  for s, (item, x, y) in enumerate(chains):
    w = item_counts[:, np.asarray(item, np.int64)] * seed_counts[:, s:s + 1]  # [R, n]
    x, y = np.asarray(x, float), np.asarray(y, float)
    sw += w.sum(1)
    sx += w @ x
    sy += w @ y
    sxx += w @ (x * x)
    sxy += w @ (x * y)
  with np.errstate(invalid="ignore", divide="ignore"):
    slope = (sw * sxy - sx * sy) / (sw * sxx - sx * sx)
    mean = sy / sw
  return 1e4 * slope, 100.0 * mean  # fractions -> points; per token -> per 100 tokens


def _check_chains(chains: Sequence[Chains], num_items: int, where: str) -> list[Chains]:
  out = []
  for s, (item, x, y) in enumerate(chains):
    item, x, y = np.asarray(item), np.asarray(x, float), np.asarray(y, float)
    if not item.shape == x.shape == y.shape or item.ndim != 1:
      raise ValueError(f"{where}: seed {s}: item, think tokens and precision must be 1-D of "
                       f"one length, got {item.shape}, {x.shape}, {y.shape}")
    if item.size and (item.min() < 0 or item.max() >= num_items):
      raise ValueError(f"{where}: seed {s}: item indices outside [0, {num_items})")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
      raise ValueError(f"{where}: seed {s}: non-finite think tokens or precision (drop the "
                       "chains without a claim first)")
    out.append((item, x, y))
  return out


def perception_decay(chains: Sequence[Chains], *, num_items: int, num_resamples: int = 1000,
                     seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
  """The perception-decay slope of one model (one entry in `chains`) or of seeds pooled.

  Returns {"slope_per_100_tokens", "slope_ci", "mean_precision", "mean_ci", "num_chains"}:
  the least-squares slope of claim precision (points) on think tokens, per 100 tokens (< 0:
  perception decays along the chain), and the mean precision, with the two-level bootstrap
  (seeds, then items) interval. NaN (and a NaN interval) when the chains' lengths are all
  equal or there are none.
  """
  chains = _check_chains(chains, num_items, "perception_decay")
  ones = (np.ones((1, num_items), np.int64), np.ones((1, len(chains)), np.int64))
  slope, mean = (v[0] for v in _decay_resampled(chains, *ones))
  items, seeds = scaling.resample_counts(num_items, len(chains), num_resamples, seed)
  boot_slope, boot_mean = _decay_resampled(chains, items, seeds)
  return {"slope_per_100_tokens": float(slope), "slope_ci": _interval(boot_slope, confidence),
          "mean_precision": float(mean), "mean_ci": _interval(boot_mean, confidence),
          "num_chains": int(sum(c[0].size for c in chains))}


def compare_perception(arm_a: Sequence[Chains], arm_b: Sequence[Chains], *, num_items: int,
                       num_resamples: int = 1000, seed: int = 0,
                       confidence: float = 0.95) -> dict[str, Any]:
  """B minus A: the perception-decay slope (points per 100 tokens) and the mean precision
  (points), each arm's seeds pooled; items resampled once for both arms (paired), seeds per
  arm, as `compare_arms`."""
  arm_a = _check_chains(arm_a, num_items, "compare_perception (arm A)")
  arm_b = _check_chains(arm_b, num_items, "compare_perception (arm B)")
  items, seeds_a = scaling.resample_counts(num_items, len(arm_a), num_resamples, seed)
  _, seeds_b = scaling.resample_counts(num_items, len(arm_b), num_resamples, seed + 1)
  one = np.ones((1, num_items), np.int64)
  slope_a, mean_a = (v[0] for v in _decay_resampled(arm_a, one, np.ones((1, len(arm_a)), int)))
  slope_b, mean_b = (v[0] for v in _decay_resampled(arm_b, one, np.ones((1, len(arm_b)), int)))
  boot_sa, boot_ma = _decay_resampled(arm_a, items, seeds_a)
  boot_sb, boot_mb = _decay_resampled(arm_b, items, seeds_b)
  return {"decay_diff": float(slope_b - slope_a),
          "decay_diff_ci": _interval(boot_sb - boot_sa, confidence),
          "precision_diff": float(mean_b - mean_a),
          "precision_diff_ci": _interval(boot_mb - boot_ma, confidence),
          "seeds": [len(arm_a), len(arm_b)]}


def _fifths(rows: Sequence[dict[str, Any]], key: str,
            fraction: float) -> tuple[np.ndarray, np.ndarray] | None:
  """(first, last) finite values of `key` over the first / last `fraction` of steps."""
  steps = np.array([r["step"] for r in rows if key in r], float)
  values = np.array([float(r[key]) if r[key] is not None else np.nan for r in rows if key in r])
  keep = np.isfinite(values)
  steps, values = steps[keep], values[keep]
  if steps.size < 2:
    return None
  order = np.argsort(steps, kind="stable")
  values = values[order]
  n = max(1, int(round(fraction * values.size)))
  return values[:n], values[-n:]


# `reward/*` keys that are batch statistics, not reward components.
NOT_COMPONENTS = ("reward/total_std", "reward/constant_group_frac")


def training_summary(metrics_files: Sequence[str], *, prefix: str = "reward/",
                     extra_keys: Sequence[str] = ("think_length",), fraction: float = 0.2,
                     num_resamples: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, dict[str, Any]]:
  """{component: {first, last, diff, ci (of diff), first_ci, last_ci, per_seed, steps}}.

  Components are the `prefix*` keys (prefix stripped) plus `extra_keys`, over the seeds'
  metrics.jsonl files; first / last: the mean over the first / last `fraction` of steps,
  averaged over seeds.
  """
  if not metrics_files:
    raise ValueError("training_summary needs at least one metrics.jsonl")
  runs = [plots.read_metrics(f) for f in metrics_files]
  keys = sorted({k for rows in runs for row in rows for k in row
                 if k.startswith(prefix) and k not in NOT_COMPONENTS})
  keys += [k for k in extra_keys if any(k in row for rows in runs for row in rows)]
  rng = np.random.default_rng(seed)
  out: dict[str, dict[str, Any]] = {}
  for key in keys:
    parts = [_fifths(rows, key, fraction) for rows in runs]
    if any(p is None for p in parts):
      continue
    boot_first, boot_last, firsts, lasts = [], [], [], []
    for first, last in parts:
      firsts.append(first.mean())
      lasts.append(last.mean())
      for values, sink in ((first, boot_first), (last, boot_last)):
        counts = rng.multinomial(values.size, np.full(values.size, 1.0 / values.size),
                                 size=num_resamples)
        sink.append(counts @ values / values.size)
    b_first, b_last = np.mean(boot_first, 0), np.mean(boot_last, 0)
    name = key[len(prefix):] if key.startswith(prefix) else key
    out[name] = {
        "first": float(np.mean(firsts)), "last": float(np.mean(lasts)),
        "diff": float(np.mean(lasts) - np.mean(firsts)),
        "ci": _interval(b_last - b_first, confidence),
        "first_ci": _interval(b_first, confidence), "last_ci": _interval(b_last, confidence),
        "per_seed": [[float(f), float(l)] for f, l in zip(firsts, lasts)],
        "steps_per_fifth": int(parts[0][0].size),
    }
  return out
