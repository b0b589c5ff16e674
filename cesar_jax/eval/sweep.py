"""The test-time scaling sweep: sample every item under every think budget, score, summarise.

One sampler call per chunk of items covers all budgets and all K samples of those items:

* forced mode: the prompt does not depend on the budget, so each item is prefilled once and
  its `len(budgets) * K` rows carry their own budget (the sampler enforces it);
* prompted mode: the budget is in the prompt ("less than N words"), so each (item, budget) is
  a prompt of its own, with K rows each, and the sampler never intervenes.

Each completion is scored with the benchmarks' official `string_match` (an option letter is
resolved first), and, where the item has ground-truth events (the synthetic set), its think
part is checked for perception (`eval/perception.py`). `natural` sampling (Gema et al.) draws K
unconstrained samples per item for the accuracy-per-length-rank curve.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from cesar_jax import prompts as prompts_lib
from cesar_jax.data import pipeline
from cesar_jax.eval import perception, scaling, scoring
from cesar_jax.models import features as features_lib
from cesar_jax.sampling import sampler as sampler_lib
from cesar_jax.tokenizers import Tokenizer


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """What the sweep samples. `budgets` default: CESAR's 0..250 step 25 (arXiv 2510.20867)."""
  budgets: tuple[int, ...] = scaling.CESAR_BUDGETS
  mode: str = "forced"
  num_samples: int = 1
  items_per_call: int = 16
  temperature: float = 1.0
  greedy: bool = False
  n_mels: int = 128
  chunk_seconds: float = 30.0
  seed: int = 0

  def __post_init__(self):
    if self.mode not in sampler_lib.BUDGET_MODES:
      raise ValueError(f"sweep mode {self.mode!r}; choose from {sampler_lib.BUDGET_MODES}")
    if not self.budgets or min(self.budgets) < 0:
      raise ValueError(f"sweep budgets must be non-empty and >= 0, got {self.budgets}")


@dataclasses.dataclass
class SweepOutput:
  """Per-sample results of a sweep (N rows) plus the texts, for reports and inspection."""
  results: scaling.SweepResults
  completions: list[str]
  perception_precision: np.ndarray  # f32[N], NaN where the chain claims nothing / no events.
  perception_recall: np.ndarray     # f32[N], NaN where the item has no events.


def _prompt_batch(items: Sequence[Mapping[str, Any]], tokenizer: Tokenizer, cfg: SweepConfig,
                  think_budget: int | None) -> dict[str, Any]:
  feats, fmask = features_lib.extract_features([np.asarray(it["audio"], np.float32) for it in items],
                                               n_mels=cfg.n_mels, chunk_seconds=cfg.chunk_seconds)
  frames = np.asarray(fmask).sum(axis=1)
  ids = [tokenizer.encode_prompt(
      prompts_lib.format_question(it["question"], it["choices"], think_budget=think_budget),
      pipeline.num_audio_tokens(int(f))) for it, f in zip(items, frames)]
  return {"input_ids": ids, "input_features": np.asarray(feats),
          "feature_attention_mask": np.asarray(fmask)}


def _score(items, item_index, completions, think_texts):
  correct = np.array([scoring.score(scoring.extract_answer(c), items[i]["answer"],
                                    items[i]["choices"]) for i, c in zip(item_index, completions)])
  precision = np.full(len(completions), np.nan, np.float32)
  recall = np.full(len(completions), np.nan, np.float32)
  for row, (i, text) in enumerate(zip(item_index, think_texts)):
    events = items[i].get("events")
    if events:
      p = perception.score(text, events)
      precision[row], recall[row] = p.precision, p.recall
  return correct, precision, recall


def run_sweep(model, tokenizer: Tokenizer, items: Sequence[Mapping[str, Any]],
              sampler_config: sampler_lib.SamplerConfig, cfg: SweepConfig, *,
              budgets: Sequence[int | None] | None = None, mesh=None) -> SweepOutput:
  """Samples `items` under every budget (`None` = unlimited) and scores every completion."""
  budgets = list(cfg.budgets if budgets is None else budgets)
  k, nb = cfg.num_samples, len(budgets)
  key = jax.random.key(cfg.seed)
  rows: dict[str, list] = {n: [] for n in ("item", "budget", "sample", "tokens", "text")}
  for start in range(0, len(items), cfg.items_per_call):
    chunk = items[start:start + cfg.items_per_call]
    key, sub = jax.random.split(key)
    if cfg.mode == "forced" or all(b is None for b in budgets):
      batch = _prompt_batch(chunk, tokenizer, cfg, None)
      row_budgets = np.tile(np.repeat([-1 if b is None else b for b in budgets], k), len(chunk))
      out = _sample(model, tokenizer, batch, nb * k, row_budgets, sampler_config, cfg, sub, mesh)
      item_of_row = np.repeat(np.arange(len(chunk)), nb * k)
    else:
      # One prompt per (item, budget): the budget text differs; chunks are prompt-major.
      outs = []
      for b in budgets:
        batch = _prompt_batch(chunk, tokenizer, cfg, b)
        sub, sub_b = jax.random.split(sub)
        outs.append(_sample(model, tokenizer, batch, k, None, sampler_config, cfg, sub_b, mesh))
      out = {name: np.stack([o[name].reshape(len(chunk), k) for o in outs], axis=1).reshape(-1)
             for name in outs[0]}  # [item, budget, sample] order, as in forced mode.
      item_of_row = np.repeat(np.arange(len(chunk)), nb * k)
    texts = out["texts"]
    rows["item"].append(start + item_of_row)
    rows["budget"].append(np.tile(np.repeat([-1 if b is None else b for b in budgets], k),
                                  len(chunk)))
    rows["sample"].append(np.tile(np.arange(k), len(chunk) * nb))
    rows["tokens"].append(out["think_lengths"])
    rows["text"].extend(texts)
  item = np.concatenate(rows["item"])
  completions = rows["text"]
  think_texts = [_think_part(t) for t in completions]
  correct, precision, recall = _score(items, item, completions, think_texts)
  results = scaling.SweepResults(item=item, budget=np.concatenate(rows["budget"]),
                                 sample=np.concatenate(rows["sample"]), correct=correct,
                                 think_tokens=np.concatenate(rows["tokens"]))
  return SweepOutput(results, completions, precision, recall)


def _sample(model, tokenizer, batch, num_samples, row_budgets, sampler_config, cfg, key, mesh):
  kwargs = {"greedy": True} if cfg.greedy else {"temperature": cfg.temperature}
  samples = sampler_lib.sample(model, batch, num_samples=num_samples, budgets=row_budgets,
                               config=sampler_config, key=key, mesh=mesh, **kwargs)
  return {"texts": np.array(samples.texts(tokenizer), dtype=object),
          "think_lengths": np.asarray(samples.think_lengths)}


def _think_part(completion: str) -> str:
  start = completion.find("<think>")
  if start < 0:
    return ""
  end = completion.find("</think>", start)
  return completion[start + len("<think>"):end if end >= 0 else None]
