"""The evaluation report: report.json, report.md and the figures, in one folder.

    write_report(workdir, {
        "cesar": {"curve": curve, "perception": perception, "metrics": "run/metrics.jsonl"},
        "baseline": curve,                   # a bare ScalingCurve is fine too
    })

report.json layout: {"models": {name: {budgets, accuracy, ci_low, ci_high,
mean_think_tokens, slope_per_token, slope_ci, intercept, slope_per_log_token, slope_log_ci,
slope_per_used_token, slope_used_ci, sweet_spot, sweet_spot_ci, sweet_spot_accuracy,
fixed_budget, fixed_accuracy, fixed_ci, num_items, samples_per_item, confidence,
num_resamples, num_seeds, [natural_think_tokens], [perception], [natural_overthinking],
[breakdown]}}, "protocols": {PROTOCOL: {"models": {name: the same curve fields}}} (when the
entries have "protocols"; the top-level "models" hold the first protocol's),
"natural_think_tokens": {name: tokens}, and with `experiment`
(`evaluate.experiment_summary`): "seeds" {ARM: {models, protocols: {PROTOCOL:
{slope_per_token [per seed], slope_ci, accuracy_at_fixed, pooled}}}}, "comparisons"
{"B_minus_A": {PROTOCOL: {slope_diff, slope_diff_ci, accuracy_diff, accuracy_diff_ci,
fixed_budget}}}, "training" {ARM: {COMPONENT: {first, last, diff, ci, first_ci, last_ci,
per_seed}}}, "perception_comparisons" {"B_minus_A": {decay_diff, decay_diff_ci,
precision_diff, precision_diff_ci, seeds}} (and "perception" in each "seeds" arm and in a
model's "perception" as "decay": {slope_per_100_tokens, slope_ci, mean_precision, mean_ci,
num_chains}, precision in points: `experiment.perception_decay`), "fixed_budget"; then "figures": {kind: file name}, "units". Accuracies are in
percent, perception figures are fractions in [0, 1]. NaN (an undefined slope) is null.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any, Mapping

import jax
import numpy as np
from etils import epath

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
  if "protocol" in source:
    out["protocol"] = str(source["protocol"])
  if source.get("decay") is not None:  # experiment.perception_decay (points, not fractions)
    out["decay"] = dict(source["decay"])
  values = np.array(list(out["accuracy"]) + [out["precision"], out["recall"]], float)
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
  unknown = set(value) - {"curve", "perception", "metrics", "natural_overthinking", "breakdown",
                          "protocols", "natural_think_tokens", "answer_rates"}
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


def format_ci(ci: Any, digits: int = 2, signed: bool = False) -> str:
  """[low, high] at `digits` decimals (signed: with a sign), "[n/a]" when absent."""
  if ci is None:
    return "[n/a]"
  return f"[{_fmt(ci[0], digits, signed)}, {_fmt(ci[1], digits, signed)}]"


def _protocol_label(protocol: str) -> str:
  return {"cap": "cap (CESAR's L_max: `</think>` forced at the budget)",
          "extend": "extend (s1 budget forcing: an early `</think>` becomes the continuation, "
                    "so the model thinks exactly L tokens)",
          "prompted": "prompted (the budget is stated in the prompt only)"}.get(protocol, protocol)


def _curve_table(models: Mapping[str, Mapping[str, Any]], chance: float | None,
                 natural: Mapping[str, Any]) -> list[str]:
  fixed = next(iter(models.values())).get("fixed_budget")
  head = "| model | items × samples | natural think | P(L_min) |"
  if fixed is not None:
    head += f" P({fixed}) [95% CI] | × chance at {fixed} | answers naming an option at {fixed} |"
  head += (" L* [95% CI] | P(L*) | β (pts/token) [95% CI] | β per used token [95% CI] |"
           " think tokens used at L_max |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for name, m in models.items():
    row = (f"| {name} | {m['num_items']} × {m['samples_per_item']} | "
           f"{_fmt(natural.get(name), 1)} | {_fmt(m['accuracy'][0], 1)} |")
    if fixed is not None:
      ratio = (None if chance is None or m.get("fixed_accuracy") is None
               else m["fixed_accuracy"] / chance)
      rate = (m["answer_rate"][list(m["budgets"]).index(fixed)]
              if m.get("answer_rate") and fixed in m["budgets"] else None)
      row += (f" {_fmt(m.get('fixed_accuracy'), 1)} {format_ci(m.get('fixed_ci'), 1)} | {_fmt(ratio)} |"
              f" {_fmt(rate, 1)}{'%' if rate is not None else ''} |")
    spot_ci = m.get("sweet_spot_ci") or [None, None]
    row += (f" {m['sweet_spot']} [{spot_ci[0]}, {spot_ci[1]}] | {_fmt(m['sweet_spot_accuracy'], 1)} | "
            f"{_fmt(m['slope_per_token'], 4, True)} {format_ci(m['slope_ci'], 4, True)} | "
            f"{_fmt(m['slope_per_used_token'], 4, True)} {format_ci(m.get('slope_used_ci'), 4, True)} | "
            f"{_fmt(m['mean_think_tokens'][-1], 1)} |")
    lines.append(row)
  return lines


def _experiment_md(report: Mapping[str, Any]) -> list[str]:
  lines: list[str] = []
  fixed = report.get("fixed_budget")
  seeds = report.get("seeds") or {}
  if seeds:
    lines += ["## GRPO arms pooled over training seeds", "",
              "Pooled P(L): the mean over seeds of each seed's curve; intervals: two-level "
              "bootstrap (seeds, then items). With few seeds the seed level is coarse.", ""]
    for protocol in next(iter(seeds.values()))["protocols"]:
      lines += [f"### {protocol}", "",
                f"| arm | seeds | β per seed | pooled β [95% CI] | P({fixed}) per seed | "
                f"pooled P({fixed}) [95% CI] | pooled L* [95% CI] |", "|---|---|---|---|---|---|---|"]
      for arm, s in seeds.items():
        p = s["protocols"][protocol]
        pooled = p["pooled"]
        spot = pooled.get("sweet_spot_ci") or [None, None]
        lines.append(
            f"| {arm} | {len(s['models'])} | "
            f"{', '.join(_fmt(v, 4, True) for v in p['slope_per_token'])} | "
            f"{_fmt(pooled['slope_per_token'], 4, True)} {format_ci(pooled['slope_ci'], 4, True)} | "
            f"{', '.join(_fmt(v, 1) for v in p['accuracy_at_fixed'])} | "
            f"{_fmt(pooled.get('fixed_accuracy'), 1)} {format_ci(pooled.get('fixed_ci'), 1)} | "
            f"{pooled['sweet_spot']} [{spot[0]}, {spot[1]}] |")
      lines.append("")
  comparisons = report.get("comparisons") or {}
  if comparisons:
    lines += ["## Comparisons", "",
              "Arm minus baseline arm, pooled over each arm's seeds; intervals: bootstrap with "
              "the items resampled once for both arms (paired: same test items) and each arm's "
              f"seeds resampled on their own. Accuracy difference at the fixed budget {fixed} "
              "(named before the run, not the max).", "",
              "| comparison | protocol | β difference (pts/token) [95% CI] | "
              f"P({fixed}) difference (pts) [95% CI] |", "|---|---|---|---|"]
    for name, per in comparisons.items():
      for protocol, c in per.items():
        lines.append(f"| {name} | {protocol} | {_fmt(c['slope_diff'], 4, True)} "
                     f"{format_ci(c['slope_diff_ci'], 4, True)} | {_fmt(c['accuracy_diff'], 1, True)} "
                     f"{format_ci(c['accuracy_diff_ci'], 1, True)} |")
    lines.append("")
  training = report.get("training") or {}
  if training:
    lines += ["## Did GRPO move the policy?", "",
              "Per arm and training-reward component: the mean over the first and the last fifth "
              "of GRPO steps (averaged over seeds), and the change with a 95% bootstrap interval "
              "(steps resampled within each fifth). A change whose interval excludes 0 moved.",
              "", "| arm | component | first fifth | last fifth | change [95% CI] |",
              "|---|---|---|---|---|"]
    for arm, comps in training.items():
      for comp, t in comps.items():
        lines.append(f"| {arm} | {comp} | {_fmt(t['first'], 3)} | {_fmt(t['last'], 3)} | "
                     f"{_fmt(t['diff'], 3, True)} {format_ci(t['ci'], 3, True)} |")
    lines.append("")
  return lines


def _markdown(report: Mapping[str, Any]) -> str:
  models, figures = report["models"], report["figures"]
  chance_accuracy = report.get("chance_accuracy")
  natural = report.get("natural_think_tokens") or {}
  protocols = report.get("protocols") or {"cap": {"models": models}}
  first = next(iter(models.values()))
  chance = ("" if chance_accuracy is None else
            f" Chance (uniform guess among each item's options): {chance_accuracy:.1f}%.")
  lines = [
      "# Test-time scaling report", "",
      f"Accuracy P(L) in percent at think budget L: mean over items of each item's accuracy "
      f"over its samples; {first['confidence']:.0%} intervals: percentile bootstrap over items "
      f"({first['num_resamples']} resamples). β: least-squares slope of P on L (accuracy "
      f"points per token); β per used token: the slope on the mean think tokens actually used "
      f"(Gema et al.'s x-axis). Answers naming an option: the share of completions whose last "
      f"`<answer>` is one of the item's options at all (below-chance accuracy with a low share "
      f"is a broken answer format, not wrong counting). L*: the budget of highest accuracy, "
      f"with the interval of L* "
      f"over resamples (a wide one means the curve is flat within noise). Natural think: "
      f"mean think tokens of unconstrained samples.{chance}", "",
  ]
  for protocol, section in protocols.items():
    lines += [f"## Protocol: {_protocol_label(protocol)}", ""]
    lines += _curve_table(section["models"], chance_accuracy, natural)
    key = "scaling" if f"scaling/{protocol}" not in figures else f"scaling/{protocol}"
    lines += ["", f"![accuracy vs budget, {protocol}]({figures[key]})", ""]
  if "vs_think_tokens" in figures:
    lines += ["## Accuracy vs think tokens used", "",
              "x: the mean think tokens actually used at each budget (cap: solid, extend: dashed).",
              "", f"![accuracy vs think tokens]({figures['vs_think_tokens']})", ""]
  lines += _experiment_md(report)
  lines += ["## Scaling slopes", "", f"![slopes]({figures['slopes']})", ""]
  with_perception = {n: m["perception"] for n, m in models.items() if "perception" in m}
  if with_perception:
    chains = {p.get("protocol") for p in with_perception.values()} - {None}
    where = f" (on {', '.join(sorted(chains))}-protocol chains)" if chains else ""
    lines += [f"## Perception{where}", "",
              "Precision: the fraction of a chain's claims about the audio that hold for the "
              "clip's true events (judge-free); recall: true events described.", "",
              "Decay: the least-squares slope of a chain's precision (points) on its think "
              "tokens, per 100 tokens (< 0: perception decays along the chain), over chains that "
              "make a claim; intervals: bootstrap over items (and seeds, for arms).", "",
              "| model | precision | recall | chains | decay (pts / 100 tokens) [95% CI] |",
              "|---|---|---|---|---|"]
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # None: no chain made a claim.
    for n, p in with_perception.items():
      d = p.get("decay") or {}
      lines.append(f"| {n} | {pct(p['precision'])} | {pct(p['recall'])} | "
                   f"{d.get('num_chains', '')} | {_fmt(d.get('slope_per_100_tokens'), 1, True)} "
                   f"{format_ci(d.get('slope_ci'), 1, True) if d else ''} |")
    arms = {a: s["perception"] for a, s in (report.get("seeds") or {}).items()
            if s.get("perception")}
    if arms:
      lines += ["", "| arm (seeds pooled) | mean precision (pts) [95% CI] | decay (pts / 100 "
                "tokens) [95% CI] |", "|---|---|---|"]
      lines += [f"| {a} | {_fmt(d['mean_precision'], 1)} {format_ci(d['mean_ci'], 1)} | "
                f"{_fmt(d['slope_per_100_tokens'], 1, True)} {format_ci(d['slope_ci'], 1, True)} |"
                for a, d in arms.items()]
    comps = report.get("perception_comparisons") or {}
    if comps:
      lines += ["", "| comparison | decay difference (pts / 100 tokens) [95% CI] | mean "
                "precision difference (pts) [95% CI] |", "|---|---|---|"]
      lines += [f"| {c} | {_fmt(d['decay_diff'], 1, True)} {format_ci(d['decay_diff_ci'], 1, True)} | "
                f"{_fmt(d['precision_diff'], 1, True)} {format_ci(d['precision_diff_ci'], 1, True)} |"
                for c, d in comps.items()]
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
                 chance_accuracy: float | None = None,
                 experiment: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Writes report.json, report.md and PNG figures into `workdir`; returns the report dict.

  Args:
    workdir: output folder (created).
    models: name -> a `ScalingCurve` (or `SweepResults`, turned into one), or a dict with
      "curve" and optionally "protocols" ({protocol: ScalingCurve}), "natural_think_tokens",
      "perception" (see `normalize_perception`), "metrics" (path of a metrics.jsonl, for
      reward curves), "natural_overthinking" (a `RankCurve`) and "breakdown" (from
      `scoring.accuracy_breakdown`).
    chance_accuracy: accuracy (%) of guessing uniformly among each item's options, if known.
    experiment: `evaluate.experiment_summary`'s seeds / comparisons / training / fixed_budget.
  """
  if not models:
    raise ValueError("write_report needs at least one model")
  # Every process builds the report (a multi-host sweep gathers all rows everywhere); process
  # 0 writes it, through epath (a gs:// workdir works).
  chief = jax.process_index() == 0
  workdir = epath.Path(workdir)
  if chief:
    workdir.mkdir(parents=True, exist_ok=True)

  def out(name: str):
    return workdir / name if chief else None

  entries = {name: _entry(name, value) for name, value in models.items()}
  curves = {name: e["curve"] for name, e in entries.items()}
  by_protocol: dict[str, dict[str, Any]] = {}
  for name, e in entries.items():
    for protocol, curve in (e.get("protocols") or {}).items():
      by_protocol.setdefault(protocol, {})[name] = curve

  figures = {"scaling": "accuracy_vs_budget.png", "slopes": "slopes.png"}
  first_protocol = next(iter(by_protocol), None)
  plots.plot_scaling_curves(curves, out(figures["scaling"]),
                            title="Accuracy vs think budget" +
                            (f" ({first_protocol})" if first_protocol else ""))
  for protocol, pc in list(by_protocol.items())[1:]:
    file = f"accuracy_vs_budget_{_slug(protocol)}.png"
    plots.plot_scaling_curves(pc, out(file),
                              title=f"Accuracy vs think budget ({protocol})")
    figures[f"scaling/{protocol}"] = file
  if first_protocol is not None:
    figures[f"scaling/{first_protocol}"] = figures["scaling"]
    figures["vs_think_tokens"] = "accuracy_vs_think_tokens.png"
    plots.plot_accuracy_vs_tokens(by_protocol, out(figures["vs_think_tokens"]))
  plots.plot_slopes(curves, out(figures["slopes"]))

  report_models: dict[str, dict[str, Any]] = {}
  perception: dict[str, dict[str, Any]] = {}  # NaN for empty bins (plots); None in the JSON.
  natural_tokens: dict[str, Any] = {}
  for name, e in entries.items():
    m = _jsonable(e["curve"])
    if "natural_think_tokens" in e:
      natural_tokens[name] = m["natural_think_tokens"] = _jsonable(float(e["natural_think_tokens"]))
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
    plots.plot_perception(perception, out(figures["perception"]))
  natural = {n: e["natural_overthinking"] for n, e in entries.items() if "natural_overthinking" in e}
  if natural:
    figures["natural_overthinking"] = "natural_overthinking.png"
    plots.plot_natural_overthinking(natural, out(figures["natural_overthinking"]))
  for name, e in entries.items():
    if e.get("metrics") is not None:
      if not epath.Path(e["metrics"]).exists():
        raise FileNotFoundError(f"metrics file of model {name!r} not found: {e['metrics']}")
      file = f"rewards_{_slug(name)}.png"
      plots.plot_rewards(e["metrics"], out(file), title=f"{name}: reward components")
      figures[f"rewards/{name}"] = file

  report: dict[str, Any] = {"chance_accuracy": chance_accuracy, "models": report_models}
  if by_protocol:
    report["protocols"] = {p: {"models": _jsonable(pc)} for p, pc in by_protocol.items()}
    for name, e in entries.items():
      for protocol, rates in (e.get("answer_rates") or {}).items():
        report["protocols"][protocol]["models"][name]["answer_rate"] = _jsonable(list(rates))
  if natural_tokens:
    report["natural_think_tokens"] = natural_tokens
  if experiment:
    for key in ("seeds", "comparisons", "training", "perception_comparisons", "fixed_budget"):
      report[key] = _jsonable(experiment.get(key))
  report["figures"] = figures
  report["units"] = {"accuracy": "percent", "slope_per_token": "accuracy points per token",
                     "slope_per_log_token": "accuracy points per unit of log(1 + L_max)",
                     "perception": "fractions in [0, 1]",
                     "training": "per-step batch means of each reward component"}
  text = json.dumps(report, indent=2, allow_nan=False)
  if chief:
    (workdir / "report.json").write_text(text)
    (workdir / "report.md").write_text(_markdown(report))
  return report
