"""Evaluation figures (matplotlib, Agg): scaling curves, slopes, perception, reward curves.

Figures are built with `matplotlib.figure.Figure` directly (never pyplot), so no global
backend or figure state is touched; each function saves a PNG when given a path and returns
the figure (a notebook can display it). Curves may be `ScalingCurve` objects or their
`to_dict()` form (as read back from report.json).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np
from etils import epath
from matplotlib.figure import Figure

_DPI = 130


def _get(obj: Any, name: str) -> Any:
  return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)


def _finite(x: Any) -> float:
  """float(x), NaN for None (report.json writes NaN as null)."""
  return float("nan") if x is None else float(x)


def _colors(n: int) -> list[Any]:
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  cmap = colormaps["tab10"]
  return [cmap(i % 10) for i in range(n)]


def _save(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
  if path is not None:  # through epath: a gs:// workdir works
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
      fig.savefig(f, format="png", dpi=_DPI, bbox_inches="tight")
  return fig


def plot_scaling_curves(
    curves: Mapping[str, Any],
    path: str | os.PathLike[str] | None = None,
    title: str = "Test-time scaling: accuracy vs think budget",
) -> Figure:
  """Accuracy vs L_max per model, shaded 95% intervals, the sweet spot starred."""
  fig = Figure(figsize=(7.5, 4.8))
  ax = fig.add_subplot()
  all_budgets: set[int] = set()
  for (name, curve), color in zip(curves.items(), _colors(len(curves))):
    budgets = np.asarray(_get(curve, "budgets"), float)
    accuracy = np.asarray(_get(curve, "accuracy"), float)
    all_budgets.update(int(b) for b in budgets)
    slope = _finite(_get(curve, "slope_per_token"))
    beta = f"β = {slope:+.3f} pts/token" if np.isfinite(slope) else "β n/a"
    ax.plot(budgets, accuracy, "o-", color=color, lw=2, ms=4, label=f"{name} ({beta})")
    ax.fill_between(budgets, np.asarray(_get(curve, "ci_low"), float),
                    np.asarray(_get(curve, "ci_high"), float), color=color, alpha=0.18, lw=0)
    best = _get(curve, "sweet_spot")
    ax.plot([best], [accuracy[list(budgets).index(best)]], "*", color=color, ms=14,
            markeredgecolor="black", markeredgewidth=0.6, zorder=5)
  if all_budgets and len(all_budgets) <= 16:
    ax.set_xticks(sorted(all_budgets))
  ax.set_xlabel("think budget L_max (tokens)")
  ax.set_ylabel("accuracy (%)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.plot([], [], "*", color="gray", ms=12, markeredgecolor="black", label="sweet spot L*")
  ax.legend(fontsize=8, loc="best")
  ax.text(0.99, 0.01, "shaded: 95% bootstrap interval over items", transform=ax.transAxes,
          ha="right", va="bottom", fontsize=7, color="dimgray")
  return _save(fig, path)


def plot_accuracy_vs_tokens(
    curves_by_protocol: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike[str] | None = None,
    title: str = "Accuracy vs think tokens actually used",
) -> Figure:
  """Accuracy against the mean think tokens used at each budget (Gema et al.'s x-axis): one
  color per model, one line style per protocol, 95% intervals as error bars."""
  fig = Figure(figsize=(7.5, 4.8))
  ax = fig.add_subplot()
  names = list(dict.fromkeys(n for pc in curves_by_protocol.values() for n in pc))
  colors = dict(zip(names, _colors(len(names))))
  styles = ["-", "--", ":", "-."]
  for (protocol, pc), style in zip(curves_by_protocol.items(), styles * 4):
    for name, curve in pc.items():
      x = np.asarray(_get(curve, "mean_think_tokens"), float)
      y = np.asarray(_get(curve, "accuracy"), float)
      err = np.stack([y - np.asarray(_get(curve, "ci_low"), float),
                      np.asarray(_get(curve, "ci_high"), float) - y]).clip(min=0)
      ax.errorbar(x, y, yerr=err, fmt="o" + style, color=colors[name], lw=1.6, ms=3, capsize=2,
                  alpha=0.9, label=f"{name} ({protocol})")
  ax.set_xlabel("mean think tokens used")
  ax.set_ylabel("accuracy (%)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="best", ncol=2)
  return _save(fig, path)


def plot_slopes(
    curves: Mapping[str, Any],
    path: str | os.PathLike[str] | None = None,
    title: str = "Scaling slope β (linear fit of accuracy on L_max)",
) -> Figure:
  """Slope per model as bars with their 95% bootstrap intervals as error bars."""
  names = list(curves)
  slopes = np.array([_finite(_get(curves[n], "slope_per_token")) for n in names])
  ci = np.array([[_finite(v) for v in _get(curves[n], "slope_ci")] for n in names]).reshape(len(names), 2)
  err = np.stack([slopes - ci[:, 0], ci[:, 1] - slopes]).clip(min=0)
  fig = Figure(figsize=(max(4.0, 1.3 * len(names) + 2.5), 4.2))
  ax = fig.add_subplot()
  x = np.arange(len(names))
  colors = _colors(len(names))
  ax.bar(x, slopes, yerr=np.nan_to_num(err), capsize=6, color=colors, alpha=0.85,
         edgecolor="black", lw=0.6)
  ax.axhline(0.0, color="black", lw=0.8)
  for xi, s, hi, lo in zip(x, slopes, ci[:, 1], ci[:, 0]):
    if not np.isfinite(s):
      ax.annotate("n/a", (xi, 0.0), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
      continue
    top = max(s, hi) if s >= 0 else min(s, lo)
    top = top if np.isfinite(top) else s
    ax.annotate(f"{s:+.4f}", (xi, top), textcoords="offset points",
                xytext=(0, 7 if s >= 0 else -14), ha="center", fontsize=8)
  ax.set_xticks(x, names, rotation=15 if len(names) > 3 else 0)
  ax.set_ylabel("β (accuracy points per token)")
  ax.set_title(title)
  ax.grid(axis="y", alpha=0.3)
  ax.margins(y=0.2)
  return _save(fig, path)


def plot_perception(
    perception: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike[str] | None = None,
    title: str = "Perception accuracy vs think length",
) -> Figure:
  """Perception accuracy (fractions, plotted in %) per think-length bin, one line per model.

  `perception[name]` holds `bin_centers`, `accuracy`, `counts`, `precision`, `recall`
  (see `report.normalize_perception`). Bins with no claims are left out of the line.
  """
  fig = Figure(figsize=(7.5, 4.5))
  ax = fig.add_subplot()
  for (name, p), color in zip(perception.items(), _colors(len(perception))):
    centers = np.asarray(p["bin_centers"], float)
    accuracy = 100.0 * np.asarray(p["accuracy"], float)
    counts = np.asarray(p["counts"], float)
    keep = counts > 0
    label = f"{name} (P = {100 * p['precision']:.1f}%, R = {100 * p['recall']:.1f}%)"
    ax.plot(centers[keep], accuracy[keep], "-", color=color, lw=2, label=label)
    size = 15 + 85 * counts[keep] / max(counts.max(), 1.0)
    ax.scatter(centers[keep], accuracy[keep], s=size, color=color, edgecolor="black", lw=0.5, zorder=3)
  ax.set_xlabel("think length (tokens)")
  ax.set_ylabel("perception accuracy (%)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="best")
  ax.text(0.99, 0.01, "marker area ∝ claims in bin", transform=ax.transAxes, ha="right",
          va="bottom", fontsize=7, color="dimgray")
  return _save(fig, path)


def plot_natural_overthinking(
    rank_curves: Mapping[str, Any],
    path: str | os.PathLike[str] | None = None,
    title: str = "Natural overthinking: accuracy by reasoning-length rank",
) -> Figure:
  """Accuracy vs mean think tokens of each length rank (Gema et al.), 95% error bars."""
  fig = Figure(figsize=(7.0, 4.5))
  ax = fig.add_subplot()
  for (name, rc), color in zip(rank_curves.items(), _colors(len(rank_curves))):
    x = np.asarray(_get(rc, "mean_think_tokens"), float)
    y = np.asarray(_get(rc, "accuracy"), float)
    err = np.stack([y - np.asarray(_get(rc, "ci_low"), float), np.asarray(_get(rc, "ci_high"), float) - y])
    ax.errorbar(x, y, yerr=err.clip(min=0), fmt="o-", color=color, capsize=4, lw=2, label=name)
  ax.set_xlabel("mean think tokens of the rank (shortest → longest sample)")
  ax.set_ylabel("accuracy (%)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return _save(fig, path)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """Rows of a metrics.jsonl (one JSON object with `step` per line); errors name file and line."""
  rows = []
  with epath.Path(path).open() as f:
    for line_number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{line_number}: not a JSON object: {e}") from e
      if not isinstance(row, dict) or "step" not in row:
        raise ValueError(f"{path}:{line_number}: metrics row has no 'step'")
      rows.append(row)
  return rows


def _moving_average(y: np.ndarray, window: int) -> np.ndarray:
  """Trailing mean over up to `window` finite points (shorter at the start)."""
  finite = np.isfinite(y)
  cs = np.concatenate([[0.0], np.cumsum(np.where(finite, y, 0.0))])
  cn = np.concatenate([[0], np.cumsum(finite)])
  hi = np.arange(1, len(y) + 1)
  lo = np.maximum(hi - window, 0)
  n = cn[hi] - cn[lo]
  return np.where(n > 0, (cs[hi] - cs[lo]) / np.maximum(n, 1), np.nan)


def plot_rewards(
    metrics: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str] | None = None,
    prefix: str = "reward/",
    title: str = "Reward components over training",
) -> Figure:
  """One panel per `reward/*` key over steps (raw, and a moving average when many steps)."""
  rows = read_metrics(metrics) if isinstance(metrics, (str, os.PathLike)) else list(metrics)
  keys = sorted({k for row in rows for k in row if k.startswith(prefix)})
  if not keys:
    where = os.fspath(metrics) if isinstance(metrics, (str, os.PathLike)) else "rows given"
    raise ValueError(f"no '{prefix}*' keys in the metrics ({where})")
  rows = sorted(rows, key=lambda r: r["step"])
  steps = np.array([r["step"] for r in rows], float)
  cols = min(3, len(keys))
  nrows = -(-len(keys) // cols)
  fig = Figure(figsize=(4.2 * cols, 2.9 * nrows), layout="constrained")
  axes = fig.subplots(nrows, cols, squeeze=False)
  window = max(1, len(rows) // 20)
  for ax, key, color in zip(axes.flat, keys, _colors(len(keys))):
    y = np.array([float(r.get(key, np.nan)) for r in rows])
    if window > 1:
      ax.plot(steps, y, color=color, alpha=0.3, lw=1)
      ax.plot(steps, _moving_average(y, window), color=color, lw=2)
    else:
      ax.plot(steps, y, "o-", color=color, lw=2, ms=3)
    ax.set_title(key[len(prefix):] or key, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  for ax in axes.flat[len(keys):]:
    ax.set_visible(False)
  fig.suptitle(title + (f" (lines: {window}-step moving average)" if window > 1 else ""))
  return _save(fig, path)
