"""The `eval_scaling` job: load models, sweep think budgets, write the report.

    python -m cesar_jax.main --config=configs/eval_scaling.py --config.checkpoint=RUN_DIR \
        --workdir=EVAL_DIR

`config.checkpoint` is one run workdir, or several as `name=DIR,name=DIR` (one figure, one
report). Items come from the synthetic test split (with ground-truth events, so perception is
scored too) or from MMAU / MMAR metadata plus a local audio directory.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any, Mapping, Sequence

import numpy as np
import jax
from absl import logging
from etils import epath

from cesar_jax import metrics as metrics_lib
from cesar_jax import model_store
from cesar_jax.data import audio_io, mmar, mmau, synthetic
from cesar_jax.eval import experiment, perception, report, scaling, scoring, sweep
from cesar_jax.parallel import mesh as mesh_lib
from cesar_jax.sampling import sampler as sampler_lib

BENCHMARK_READERS = {"mmau": mmau.read, "mmar": mmar.read}
# Item fields (synthetic items and `records.Record`s alike) the accuracy is broken down by.
BREAKDOWN_KEYS = ("task", "category", "sub_category", "difficulty")


def parse_checkpoints(spec: str) -> dict[str, str]:
  """`DIR` or `name=DIR,name=DIR` -> {name: DIR} (a bare DIR is named by its folder)."""
  out = {}
  for part in filter(None, (p.strip() for p in spec.split(","))):
    name, sep, path = part.partition("=")
    if not sep:
      name, path = pathlib.Path(part).name, part
    if name in out:
      raise ValueError(f"config.checkpoint names model {name!r} twice")
    out[name] = path
  if not out:
    raise ValueError("config.checkpoint is empty: give a run workdir or name=DIR,name=DIR")
  return out


def load_items(data: Mapping[str, Any]) -> list[dict[str, Any]]:
  """Evaluation items (dicts with audio, question, choices, answer, and events if known)."""
  if data["name"] == "synthetic":
    opts = dict(data["synthetic"])
    if data["question_types"]:
      opts["question_types"] = tuple(data["question_types"])
    if data["tasks"]:
      opts["tasks"] = tuple(data["tasks"])
    return list(synthetic.generate(data["split"], data["num_examples"], data["seed"], **opts))
  if data["name"] not in BENCHMARK_READERS:
    raise ValueError(f"config.data.name={data['name']!r}: choose synthetic, "
                     f"{', '.join(BENCHMARK_READERS)}")
  if not data["path"]:
    raise ValueError(f"config.data.path: the {data['name']} metadata file is required")
  loaded = BENCHMARK_READERS[data["name"]](data["path"], data["audio_dir"] or None,
                                           skip_bad_records=data["skip_bad_records"])
  loaded.report.log()
  records = loaded.records[:data["num_examples"]] if data["num_examples"] else loaded.records
  return [dict(r.metadata(), audio=audio_io.load_audio(r.audio_path)) for r in records]


def sweep_config(config) -> sweep.SweepConfig:
  e = config.eval
  return sweep.SweepConfig(budgets=tuple(e.budgets), protocols=tuple(e.protocols),
                           num_samples=e.num_samples, natural_samples=int(e.natural_samples),
                           items_per_call=e.items_per_call,
                           temperature=e.temperature, greedy=e.greedy,
                           n_mels=config.data.n_mels, chunk_seconds=config.data.chunk_seconds,
                           seed=config.seed)


def perception_chains(out: sweep.SweepOutput,
                      rows: np.ndarray | None = None) -> experiment.Chains | None:
  """(item, think tokens, claim precision) of the chains that make a claim (`rows` only)."""
  rows = np.ones(len(out.perception_precision), bool) if rows is None else rows
  has = ~np.isnan(out.perception_precision) & rows
  if not has.any():
    return None
  return (out.results.item[has], out.results.think_tokens[has].astype(float),
          out.perception_precision[has].astype(float))


def perception_summary(out: sweep.SweepOutput, num_bins: int = 6,
                       rows: np.ndarray | None = None, *, num_items: int | None = None,
                       num_resamples: int = 1000, seed: int = 0) -> dict[str, Any] | None:
  """Perception accuracy (claim precision of a chain) against think length, where known.

  rows: bool[N] the rows to use (e.g. one protocol's); None: all. With `num_items` (the
  sweep's item count) also "decay": `experiment.perception_decay` of these chains.
  """
  rows = np.ones(len(out.perception_precision), bool) if rows is None else rows
  chains = perception_chains(out, rows)
  if chains is None:
    return None
  item, lengths, precision = chains
  curve = perception.accuracy_by_length(lengths, precision, num_bins=num_bins)
  recall = out.perception_recall[~np.isnan(out.perception_recall) & rows]
  summary = {"bin_centers": curve["bin_centers"], "accuracy": curve["mean"],
             "counts": curve["count"], "precision": float(precision.mean()),
             "recall": float(recall.mean()) if recall.size else float("nan")}
  if num_items is not None:
    summary["decay"] = experiment.perception_decay([chains], num_items=num_items,
                                                   num_resamples=num_resamples, seed=seed)
  return summary


def _fixed_budget(config) -> int | None:
  fixed = int(config.eval.get("fixed_budget", -1))
  return None if fixed < 0 else fixed


def evaluate_model(name: str, workdir: str, items: Sequence[Mapping[str, Any]], config,
                   mesh=None) -> dict[str, Any]:
  """Sweeps one trained model; returns the report entry (curves per protocol, perception...).

  The entry's "results" ({protocol: SweepResults}) stay in memory for pooling seeds.
  """
  model, run_config = model_store.restore_model(workdir, mesh=mesh)
  tokenizer = model_store.load_tokenizer("", workdir)
  cfg = sweep_config(config)
  e = config.eval
  sampler_config = sampler_lib.SamplerConfig.from_tokenizer(
      tokenizer, max_new_tokens=e.max_new_tokens, budget_mode="forced",
      prompt_buckets=tuple(config.data.buckets), continuation=e.get("continuation", None))
  fixed = _fixed_budget(config)
  t0 = time.perf_counter()
  out = sweep.run_sweep(model, tokenizer, items, sampler_config, cfg, mesh=mesh)
  curves, results = {}, {}
  for protocol in cfg.protocols:
    results[protocol] = out.select(protocol)
    curves[protocol] = scaling.scaling_curve(results[protocol], num_resamples=e.num_resamples,
                                             seed=config.seed, fixed_budget=fixed)
  main = cfg.protocols[0]
  logging.info("%s: swept %d completions in %.1f s; %s accuracy by budget %s", name,
               len(out.completions), time.perf_counter() - t0, main,
               dict(zip(curves[main].budgets.tolist(),
                        np.round(curves[main].accuracy, 1).tolist())))
  entry: dict[str, Any] = {"curve": curves[main], "protocols": curves, "results": results,
                           "answer_rates": {}}
  for protocol in cfg.protocols:
    rows = out.mask(protocol)
    budgets_here = out.results.budget[rows]
    entry["answer_rates"][protocol] = [
        float(100 * out.names_option[rows][budgets_here == b].mean())
        for b in curves[protocol].budgets]
  metrics = pathlib.Path(workdir) / "metrics.jsonl"
  if metrics.is_file() and any(k.startswith("reward/") for row in metrics_lib.read_jsonl(metrics)
                               for k in row):
    entry["metrics"] = str(metrics)  # A GRPO run: its reward components go in the report.
  # Perception on the longest chains there are: extend mode's when swept.
  chains = "extend" if "extend" in cfg.protocols else main
  p = perception_summary(out, rows=out.mask(chains), num_items=len(items),
                         num_resamples=e.num_resamples, seed=config.seed)
  if p is not None:
    entry["perception"] = dict(p, protocol=chains)
    # In memory only (popped before the report): pooled over seeds, compared between arms.
    entry["perception_chains"] = perception_chains(out, out.mask(chains))
  curve = curves[main]
  at = curve.sweet_spot if fixed is None else fixed
  first = (results[main].budget == at) & (results[main].sample == 0)
  entry["breakdown"] = scoring.accuracy_breakdown(
      [items[i] for i in results[main].item[first]], results[main].correct[first],
      keys=BREAKDOWN_KEYS)
  if cfg.natural_samples:
    nat = out.select(sweep.NATURAL)
    entry["natural_think_tokens"] = float(nat.think_tokens.mean())
    if cfg.natural_samples > 1:
      entry["natural_overthinking"] = scaling.natural_overthinking(
          nat.item, nat.correct, nat.think_tokens, num_resamples=e.num_resamples,
          seed=config.seed)
  del run_config
  return entry


def experiment_summary(entries: Mapping[str, Mapping[str, Any]],
                       arms: Mapping[str, Sequence[str]], config) -> dict[str, Any]:
  """Seeds pooled per arm, arm comparisons (each arm minus the first) and training moves.

  arms: {arm: [model names, one per training seed]}; the first arm is the baseline.
  """
  e = config.eval
  fixed = _fixed_budget(config)
  protocols = list(next(iter(entries.values()))["protocols"])
  seeds: dict[str, Any] = {}
  for arm, names in arms.items():
    missing = [n for n in names if n not in entries]
    if missing:
      raise KeyError(f"arm {arm!r}: models {missing} were not evaluated")
    seeds[arm] = {"models": list(names), "protocols": {}}
    for p in protocols:
      pooled = scaling.pooled_curve([entries[n]["results"][p] for n in names],
                                    num_resamples=e.num_resamples, seed=config.seed,
                                    fixed_budget=fixed)
      per = [entries[n]["protocols"][p] for n in names]
      seeds[arm]["protocols"][p] = {
          "slope_per_token": [c.slope_per_token for c in per],
          "slope_ci": [list(c.slope_ci) for c in per],
          "accuracy_at_fixed": [c.fixed_accuracy for c in per],
          "pooled": pooled,
      }
  comparisons: dict[str, Any] = {}
  names = list(arms)
  if fixed is not None:
    for other in names[1:]:
      comparisons[f"{other}_minus_{names[0]}"] = {
          p: experiment.compare_arms(
              [entries[n]["results"][p] for n in arms[names[0]]],
              [entries[n]["results"][p] for n in arms[other]], fixed_budget=fixed,
              num_resamples=e.num_resamples, seed=config.seed)
          for p in protocols}
  # Perception decay pooled per arm and compared (each arm minus the first), where every
  # model of the arms has chains with claims.
  perception_comparisons: dict[str, Any] = {}
  chains = {arm: [entries[n].get("perception_chains") for n in arm_names]
            for arm, arm_names in arms.items()}
  chains = {arm: c for arm, c in chains.items() if all(x is not None for x in c)}
  num_items = max([int(entries[n]["curve"].num_items) for n in entries]
                  + [int(x[0].max()) + 1 for c in chains.values() for x in c])
  for arm, c in chains.items():
    seeds[arm]["perception"] = experiment.perception_decay(
        c, num_items=num_items, num_resamples=e.num_resamples, seed=config.seed)
  if names[0] in chains:
    for other in names[1:]:
      if other in chains:
        perception_comparisons[f"{other}_minus_{names[0]}"] = experiment.compare_perception(
            chains[names[0]], chains[other], num_items=num_items,
            num_resamples=e.num_resamples, seed=config.seed)
  training = {}
  for arm, arm_names in arms.items():
    files = [entries[n]["metrics"] for n in arm_names if "metrics" in entries[n]]
    if files:
      training[arm] = experiment.training_summary(files, num_resamples=e.num_resamples,
                                                  seed=config.seed)
  return {"seeds": seeds, "comparisons": comparisons, "training": training,
          "perception_comparisons": perception_comparisons, "fixed_budget": fixed}


def evaluate(checkpoints: Mapping[str, str], config, workdir: str,
             arms: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
  """Sweeps every named model on the same items and writes one report into `workdir`.

  arms: optional {arm: [model names]} (GRPO seeds of one reward preset) for the pooled
  curves, the comparisons and the training summary.
  """
  mesh = mesh_lib.make_mesh(tuple(config.mesh.shape), mesh_lib.MESH_AXES)
  items = load_items(config.data)
  logging.info("evaluating %d models on %d items (%s)", len(checkpoints), len(items),
               config.data.name)
  entries = {name: evaluate_model(name, path, items, config, mesh)
             for name, path in checkpoints.items()}
  summary = experiment_summary(entries, arms, config) if arms else None
  for entry in entries.values():
    entry.pop("results")
    entry.pop("perception_chains", None)
  return report.write_report(workdir, entries, chance_accuracy=chance_accuracy(items),
                             experiment=summary)


def chance_accuracy(items: Sequence[Mapping[str, Any]]) -> float:
  """Accuracy (%) of a uniform guess among each item's options."""
  return float(100 * np.mean([1 / len(it["choices"]) for it in items]))


def run(config, workdir: str) -> None:
  result = evaluate(parse_checkpoints(config.checkpoint), config, workdir)
  for name, m in result["models"].items():
    logging.info("%s: slope %+.4f points/token (95%% CI %s), sweet spot %s", name,
                 m["slope_per_token"] or float("nan"), m["slope_ci"], m["sweet_spot"])
  if jax.process_index() == 0:
    print(f"report: {epath.Path(workdir) / 'report.md'}")
