"""The evaluation report: report.json, report.md and the figures, in one folder.

    write_report(workdir, {
        "cesar": {"curve": curve, "perception": perception, "metrics": "run/metrics.jsonl"},
        "baseline": curve,                   # a bare ScalingCurve is fine too
    })

report.json layout: {"models": {name: {budgets, accuracy, ci_low, ci_high,
mean_think_tokens, slope_per_token, slope_ci, intercept, slope_per_log_token, slope_log_ci,
slope_per_used_token, sweet_spot, sweet_spot_accuracy, num_items, samples_per_item,
confidence, num_resamples, [perception], [natural_overthinking], [breakdown]}},
"figures": {kind: file name}, "units": {...}}. Accuracies are in percent, perception figures
are fractions in [0, 1]. NaN (an undefined slope) is written as null.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any, Mapping

import numpy as np

from cesar_jax.eval import plots
from cesar_jax.eval import scaling

_PERCEPTION_ALIASES = {
    "bin_centers": ("bin_centers", "bin_centres", "centers", "centres"),
    "accuracy": ("accuracy", "mean_accuracy", "perception_accuracy"),
    "counts": ("counts", "count", "num_claims"),
    "precision": ("precision",),
    "recall": ("recall",),
}


def _as_mapping(obj: Any) -> Mapping[str, Any]:
  if isinstance(obj, Mapping):
    return obj
  if dataclasses.is_dataclass(obj):
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
  return vars(obj)


def normalize_perception(perception: Any, model: str) -> dict[str, Any]:
  """Perception figures as {bin_centers, accuracy, counts, precision, recall} (fractions).

  Accepts a dict or a dataclass/object with those fields (`bin_centres` etc. also accepted).
  """
  source = _as_mapping(perception)
  out: dict[str, Any] = {}
  for name, aliases in _PERCEPTION_ALIASES.items():
    found = [a for a in aliases if a in source]
    if not found:
      raise KeyError(f"perception figures of model {model!r} lack {name!r} (any of {aliases}); "
                     f"got keys {sorted(source)}")
    out[name] = source[found[0]]
  for name in ("bin_centers", "accuracy", "counts"):
    out[name] = np.asarray(out[name], float).tolist()
  if not len(out["bin_centers"]) == len(out["accuracy"]) == len(out["counts"]):
    raise ValueError(f"perception figures of model {model!r}: bin_centers, accuracy and counts "
                     "differ in length")
  for name in ("precision", "recall"):
    out[name] = float(out[name])
  values = np.array(out["accuracy"] + [out["precision"], out["recall"]], float)
  if np.any(values[np.isfinite(values)] > 1.0) or np.any(values < 0.0):
    raise ValueError(f"perception figures of model {model!r} must be fractions in [0, 1]")
  return out


def _entry(name: str, value: Any) -> dict[str, Any]:
  """A model entry as {"curve": ..., optional "perception", "metrics", ...}."""
  if isinstance(value, (scaling.ScalingCurve, scaling.SweepResults)):
    value = {"curve": value}
  if not isinstance(value, Mapping) or "curve" not in value:
    raise ValueError(f"model {name!r}: expected a ScalingCurve or a dict with a 'curve' key, "
                     f"got {type(value).__name__}")
  unknown = set(value) - {"curve", "perception", "metrics", "natural_overthinking", "breakdown"}
  if unknown:
    raise ValueError(f"model {name!r}: unknown report keys {sorted(unknown)}")
  entry = dict(value)
  if isinstance(entry["curve"], scaling.SweepResults):
    entry["curve"] = scaling.scaling_curve(entry["curve"])
  return entry


def _jsonable(value: Any) -> Any:
  """Lists/floats for JSON; NaN and inf become None."""
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, np.ndarray)):
    return [_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  if hasattr(value, "to_dict"):
    return _jsonable(value.to_dict())
  return value


def _slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def _fmt(x: Any, digits: int = 2, signed: bool = False) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "n/a"
  return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _markdown(models: Mapping[str, dict[str, Any]], figures: Mapping[str, str],
              chance_accuracy: float | None = None) -> str:
  first = next(iter(models.values()))
  chance = ("" if chance_accuracy is None else
            f" Chance (uniform guess among each item's options): {chance_accuracy:.1f}%.")
  lines = [
      "# Test-time scaling report", "",
      f"Accuracy P(L_max) in percent: mean over items of each item's accuracy over its samples; "
      f"{first['confidence']:.0%} intervals: percentile bootstrap over items "
      f"({first['num_resamples']} resamples). β: least-squares slope of P on L_max "
      f"(accuracy points per token); β_log: slope on log(1 + L_max), so L_max = 0 sits at 0. "
      f"L*: the budget of highest accuracy (smallest on ties).{chance}", "",
      "| model | items × samples | P(L_min) | L* | P(L*) | β (pts/token) [95% CI] | β_log | think tokens at L_max |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for name, m in models.items():
    ci = m["slope_ci"]
    lines.append(
        f"| {name} | {m['num_items']} × {m['samples_per_item']} | {_fmt(m['accuracy'][0])} | "
        f"{m['sweet_spot']} | {_fmt(m['sweet_spot_accuracy'])} | "
        f"{_fmt(m['slope_per_token'], 4, True)} [{_fmt(ci[0], 4, True)}, {_fmt(ci[1], 4, True)}] | "
        f"{_fmt(m['slope_per_log_token'], 2, True)} | {_fmt(m['mean_think_tokens'][-1], 1)} |")
  lines += ["", "## Accuracy vs think budget", "", f"![accuracy vs budget]({figures['scaling']})", "",
            "## Scaling slopes", "", f"![slopes]({figures['slopes']})", ""]
  with_perception = {n: m["perception"] for n, m in models.items() if "perception" in m}
  if with_perception:
    lines += ["## Perception", "", "| model | precision | recall |", "|---|---|---|"]
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # None: no chain made a claim.
    lines += [f"| {n} | {pct(p['precision'])} | {pct(p['recall'])} |"
              for n, p in with_perception.items()]
    lines += ["", f"![perception vs think length]({figures['perception']})", ""]
  if "natural_overthinking" in figures:
    lines += ["## Natural overthinking", "",
              "Each item's unconstrained samples ranked by think length; accuracy per rank.", "",
              f"![natural overthinking]({figures['natural_overthinking']})", ""]
  reward_figures = {k: v for k, v in figures.items() if k.startswith("rewards/")}
  if reward_figures:
    lines += ["## Training rewards", ""]
    for key, file in reward_figures.items():
      lines += [f"### {key.split('/', 1)[1]}", "", f"![rewards]({file})", ""]
  for name, m in models.items():
    if "breakdown" in m:
      lines += [f"## Breakdown: {name}", "", "| key | value | accuracy (%) | n |", "|---|---|---|---|"]
      for key, cells in m["breakdown"].items():
        if key == "overall":
          lines.append(f"| overall | | {_fmt(cells['accuracy'])} | {cells['total']} |")
        elif isinstance(cells, Mapping):
          lines += [f"| {key} | {v} | {_fmt(c['accuracy'])} | {c['total']} |" for v, c in cells.items()]
      lines.append("")
  return "\n".join(lines)


def write_report(workdir: str | os.PathLike[str], models: Mapping[str, Any], *,
                 chance_accuracy: float | None = None) -> dict[str, Any]:
  """Writes report.json, report.md and PNG figures into `workdir`; returns the report dict.

  Args:
    workdir: output folder (created).
    models: name -> a `ScalingCurve` (or `SweepResults`, turned into one), or a dict with
      "curve" and optionally "perception" (see `normalize_perception`), "metrics" (path of a
      metrics.jsonl, for reward curves), "natural_overthinking" (a `RankCurve`) and
      "breakdown" (from `scoring.accuracy_breakdown`).
    chance_accuracy: accuracy (%) of guessing uniformly among each item's options, if known.
  """
  if not models:
    raise ValueError("write_report needs at least one model")
  workdir = os.fspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  entries = {name: _entry(name, value) for name, value in models.items()}
  curves = {name: e["curve"] for name, e in entries.items()}

  figures = {"scaling": "accuracy_vs_budget.png", "slopes": "slopes.png"}
  plots.plot_scaling_curves(curves, os.path.join(workdir, figures["scaling"]))
  plots.plot_slopes(curves, os.path.join(workdir, figures["slopes"]))

  report_models: dict[str, dict[str, Any]] = {}
  perception: dict[str, dict[str, Any]] = {}  # NaN for empty bins (plots); None in the JSON.
  for name, e in entries.items():
    m = _jsonable(e["curve"])
    if "perception" in e:
      perception[name] = normalize_perception(e["perception"], name)
      m["perception"] = _jsonable(perception[name])
    if "natural_overthinking" in e:
      m["natural_overthinking"] = _jsonable(e["natural_overthinking"])
    if "breakdown" in e:
      m["breakdown"] = _jsonable(e["breakdown"])
    report_models[name] = m

  if perception:
    figures["perception"] = "perception_vs_think_length.png"
    plots.plot_perception(perception, os.path.join(workdir, figures["perception"]))
  natural = {n: e["natural_overthinking"] for n, e in entries.items() if "natural_overthinking" in e}
  if natural:
    figures["natural_overthinking"] = "natural_overthinking.png"
    plots.plot_natural_overthinking(natural, os.path.join(workdir, figures["natural_overthinking"]))
  for name, e in entries.items():
    if e.get("metrics") is not None:
      if not os.path.exists(e["metrics"]):
        raise FileNotFoundError(f"metrics file of model {name!r} not found: {e['metrics']}")
      file = f"rewards_{_slug(name)}.png"
      plots.plot_rewards(e["metrics"], os.path.join(workdir, file), title=f"{name}: reward components")
      figures[f"rewards/{name}"] = file

  report = {
      "chance_accuracy": chance_accuracy,
      "models": report_models,
      "figures": figures,
      "units": {"accuracy": "percent", "slope_per_token": "accuracy points per token",
                "slope_per_log_token": "accuracy points per unit of log(1 + L_max)",
                "perception": "fractions in [0, 1]"},
  }
  with open(os.path.join(workdir, "report.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2, allow_nan=False)
  with open(os.path.join(workdir, "report.md"), "w", encoding="utf-8") as f:
    f.write(_markdown(report_models, figures, chance_accuracy))
  return report
