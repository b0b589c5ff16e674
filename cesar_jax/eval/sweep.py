"""The test-time scaling sweep: sample every item under every think budget, score, summarise.

Protocols (`SweepConfig.protocols`, any of):

* `cap` (the sampler's "forced" mode, CESAR's L_max): `<think>` is closed at the budget;
* `extend` (s1's budget forcing): the cap, and an early `</think>` is replaced by the
  continuation ("Wait") until the budget, so the model thinks exactly L tokens;
* `prompted`: the budget is in the prompt ("less than N words"); the sampler never intervenes.

One sampler call per chunk of items and sampler-side protocol covers all budgets and all K
samples of those items (the first call also `natural_samples` unconstrained rows: budget -1,
protocol "natural", the models' natural think length): the prompt does not depend on the
budget, so its rows carry their own budget and mode (traced, per row; the sampler could mix
cap and extend rows in one call too). Cap and extend are separate calls because the decode
loop runs until its longest row ends: cap rows stop near the natural length, extend rows
run to the largest budget, so together they would cost the extend length for every row.
Prompted mode needs one prompt per (item, budget), with K rows each.

Each completion is scored with the benchmarks' official `string_match` (an option letter is
resolved first), and, where the item has ground-truth events (the synthetic set), its think
part is checked for perception (`eval/perception.py`).
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
from cesar_jax.parallel import distributed
from cesar_jax.sampling import sampler as sampler_lib
from cesar_jax.tokenizers import Tokenizer


PROTOCOLS = ("cap", "extend", "prompted")
_ALIASES = {"forced": "cap"}  # the sampler's name for the cap
NATURAL = "natural"  # the protocol name of unconstrained rows


def protocol_names(names) -> tuple[str, ...]:
  """Protocol names with the sampler's "forced" read as "cap"; unknown names are errors."""
  names = (names,) if isinstance(names, str) else tuple(names)
  out = tuple(_ALIASES.get(n, n) for n in names)
  unknown = [n for n in out if n not in PROTOCOLS]
  if unknown or not out or len(set(out)) != len(out):
    raise ValueError(f"sweep protocols {names}: need distinct names from {PROTOCOLS} "
                     f"('forced' = 'cap')")
  return out


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """What the sweep samples. `budgets` default: CESAR's 0..250 step 25 (arXiv 2510.20867).

  protocols: see the module docstring (a str is one protocol; "forced" means "cap").
  num_samples: K samples per (item, budget, protocol).
  natural_samples: unconstrained samples per item in the same calls (protocol "natural").
  """
  budgets: tuple[int, ...] = scaling.CESAR_BUDGETS
  protocols: tuple[str, ...] | str = ("cap",)
  num_samples: int = 1
  natural_samples: int = 0
  items_per_call: int = 16
  temperature: float = 1.0
  greedy: bool = False
  n_mels: int = 128
  chunk_seconds: float = 30.0
  seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, "protocols", protocol_names(self.protocols))
    if self.num_samples < 1 or self.natural_samples < 0:
      raise ValueError(f"sweep num_samples must be >= 1 and natural_samples >= 0, got "
                       f"{self.num_samples}, {self.natural_samples}")
    if not self.budgets or min(self.budgets) < 0:
      raise ValueError(f"sweep budgets must be non-empty and >= 0, got {self.budgets}")


@dataclasses.dataclass
class SweepOutput:
  """Per-sample results of a sweep (N rows) plus the texts, for reports and inspection."""
  results: scaling.SweepResults     # every row (natural rows have budget -1)
  protocol: np.ndarray              # str[N]: "cap", "extend", "prompted" or "natural"
  completions: list[str]
  perception_precision: np.ndarray  # f32[N], NaN where the chain claims nothing / no events.
  perception_recall: np.ndarray     # f32[N], NaN where the item has no events.
  names_option: np.ndarray | None = None  # bool[N]: the last <answer> names one of the options

  def mask(self, protocol: str) -> np.ndarray:
    """bool[N]: the rows of one protocol."""
    protocol = _ALIASES.get(protocol, protocol)
    rows = self.protocol == protocol
    if not rows.any():
      raise KeyError(f"sweep has no rows of protocol {protocol!r}; it has "
                     f"{sorted(set(self.protocol.tolist()))}")
    return rows

  def select(self, protocol: str) -> scaling.SweepResults:
    """The `SweepResults` of one protocol's rows."""
    rows = self.mask(protocol)
    r = self.results
    return scaling.SweepResults(item=r.item[rows], budget=r.budget[rows], sample=r.sample[rows],
                                correct=r.correct[rows], think_tokens=r.think_tokens[rows])

  @property
  def protocols(self) -> list[str]:
    return list(dict.fromkeys(self.protocol.tolist()))


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
  predictions = [scoring.extract_answer(c) for c in completions]
  correct = np.array([scoring.score(pred, items[i]["answer"], items[i]["choices"])
                      for i, pred in zip(item_index, predictions)])
  # Whether the answer is a valid one at all (accuracy below chance means it often is not).
  names_option = np.array([any(scoring.score(pred, ch, items[i]["choices"])
                               for ch in items[i]["choices"])
                           for i, pred in zip(item_index, predictions)], bool)
  precision = np.full(len(completions), np.nan, np.float32)
  recall = np.full(len(completions), np.nan, np.float32)
  for row, (i, text) in enumerate(zip(item_index, think_texts)):
    events = items[i].get("events")
    if events:
      p = perception.score(text, events)
      precision[row], recall[row] = p.precision, p.recall
  return correct, precision, recall, names_option


def _row_plan(protocols: Sequence[str], budgets: Sequence[int | None], k: int,
              natural: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """One item's rows in a sampler call: (budget int32[R], mode names [R], protocol [R],
  sample index [R]); protocol-major, then budget, then sample, then the natural rows."""
  budget, mode, protocol, sample = [], [], [], []
  for p in protocols:
    for b in budgets:
      budget += [-1 if b is None else int(b)] * k
      mode += ["extend" if p == "extend" else "forced"] * k
      protocol += [p] * k
      sample += list(range(k))
  budget += [-1] * natural
  mode += ["forced"] * natural
  protocol += [NATURAL] * natural
  sample += list(range(natural))
  return (np.array(budget, np.int32), np.array(mode), np.array(protocol, dtype=object),
          np.array(sample, np.int32))


def run_sweep(model, tokenizer: Tokenizer, items: Sequence[Mapping[str, Any]],
              sampler_config: sampler_lib.SamplerConfig, cfg: SweepConfig, *,
              budgets: Sequence[int | None] | None = None, mesh=None) -> SweepOutput:
  """Samples `items` under every budget (`None` = unlimited) and protocol; scores every row.

  The sampler config's `budget_mode` must not be "prompted" when `cap` or `extend` rows are
  asked for (the sweep sets every row's mode itself).
  """
  budgets = list(cfg.budgets if budgets is None else budgets)
  k = cfg.num_samples
  sampled = [p for p in cfg.protocols if p != "prompted"]
  if sampled and sampler_config.budget_mode == "prompted":
    raise ValueError(f"sweep protocols {sampled} need a SamplerConfig whose budget_mode is not "
                     "'prompted' (it would drop every budget)")
  groups = [[p] for p in sampled] or [[]]  # one sampler call per protocol and chunk
  plans = [_row_plan(g, budgets, k, cfg.natural_samples if i == 0 else 0)
           for i, g in enumerate(groups)]
  key = jax.random.key(cfg.seed)
  rows: dict[str, list] = {n: [] for n in ("item", "budget", "sample", "protocol", "tokens")}
  texts: list[str] = []
  for start in range(0, len(items), cfg.items_per_call):
    chunk = items[start:start + cfg.items_per_call]
    key, sub = jax.random.split(key)
    n = len(chunk)
    batch = None
    for budget_plan, mode_plan, protocol_plan, sample_plan in plans:
      per_item = len(budget_plan)
      if not per_item:
        continue
      batch = _prompt_batch(chunk, tokenizer, cfg, None) if batch is None else batch
      sub, sub_p = jax.random.split(sub)
      out = _sample(model, tokenizer, batch, per_item, np.tile(budget_plan, n), sampler_config,
                    cfg, sub_p, mesh, modes=np.tile(mode_plan, n))
      rows["item"].append(start + np.repeat(np.arange(n), per_item))
      rows["budget"].append(np.tile(budget_plan, n))
      rows["sample"].append(np.tile(sample_plan, n))
      rows["protocol"].append(np.tile(protocol_plan, n))
      rows["tokens"].append(out["think_lengths"])
      texts.extend(out["texts"])
    if "prompted" in cfg.protocols:
      # One prompt per (item, budget): the budget text differs; rows [item, budget, sample].
      outs = []
      for b in budgets:
        batch = _prompt_batch(chunk, tokenizer, cfg, b)
        sub, sub_b = jax.random.split(sub)
        outs.append(_sample(model, tokenizer, batch, k, None, sampler_config, cfg, sub_b, mesh))
      out = {name: np.stack([o[name].reshape(n, k) for o in outs], axis=1).reshape(-1)
             for name in outs[0]}
      nb = len(budgets)
      rows["item"].append(start + np.repeat(np.arange(n), nb * k))
      rows["budget"].append(np.tile(np.repeat([-1 if b is None else b for b in budgets], k), n))
      rows["sample"].append(np.tile(np.arange(k), n * nb))
      rows["protocol"].append(np.full(n * nb * k, "prompted", dtype=object))
      rows["tokens"].append(out["think_lengths"])
      texts.extend(out["texts"])
  item = np.concatenate(rows["item"])
  think_texts = [_think_part(t) for t in texts]
  correct, precision, recall, names_option = _score(items, item, texts, think_texts)
  results = scaling.SweepResults(item=item, budget=np.concatenate(rows["budget"]),
                                 sample=np.concatenate(rows["sample"]), correct=correct,
                                 think_tokens=np.concatenate(rows["tokens"]))
  return SweepOutput(results, np.concatenate(rows["protocol"]).astype(str), texts, precision,
                     recall, names_option)


def _sample(model, tokenizer, batch, num_samples, row_budgets, sampler_config, cfg, key, mesh,
            modes=None):
  """One sampler call over a chunk of items; every process gets every row's result.

  On several processes each samples its contiguous block of the chunk's items (the same
  global call one process would make, the blocks in process order), and the texts and think
  lengths are gathered, so the rest of the sweep is the same code on any number of hosts.
  A host whose block is short (the chunk does not split evenly) repeats its last item and
  drops those rows.
  """
  kwargs = {"greedy": True} if cfg.greedy else {"temperature": cfg.temperature}
  n_items = len(batch["input_ids"])
  per_row = {"budgets": row_budgets, "modes": modes}
  lo, hi, pad = _host_block(n_items)
  if (lo, hi, pad) != (0, n_items, 0):
    rows = slice(lo * num_samples, hi * num_samples)
    batch = {k: _take(v, lo, hi, pad) for k, v in batch.items()}
    per_row = {k: None if v is None else _take(v, rows.start, rows.stop, pad * num_samples)
               for k, v in per_row.items()}
  if per_row["modes"] is not None:
    kwargs["modes"] = per_row["modes"]
  samples = sampler_lib.sample(model, batch, num_samples=num_samples,
                               budgets=per_row["budgets"], config=sampler_config, key=key,
                               mesh=mesh, **kwargs)
  real = (hi - lo) * num_samples
  tokens, lengths, think = (np.asarray(x)[:real] for x in (
      samples.tokens, samples.lengths, samples.think_lengths))
  tokens, lengths, think = (distributed.gather_rows(x) for x in (tokens, lengths, think))
  texts = tokenizer.decode_batch([t[:n] for t, n in zip(tokens, lengths)])
  return {"texts": np.array(texts, dtype=object), "think_lengths": think}


def _host_block(n: int) -> tuple[int, int, int]:
  """(first item, end, padding rows) of this process's block of n items."""
  count, index = jax.process_count(), jax.process_index()
  per = -(-n // count)
  lo, hi = min(n, index * per), min(n, (index + 1) * per)
  if hi <= lo:
    raise ValueError(f"sweep: {n} items per call leave process {index} of {count} nothing to "
                     "sample; make eval.items_per_call at least the process count")
  return lo, hi, per - (hi - lo)


def _take(x, lo: int, hi: int, pad: int):
  """Rows [lo, hi) of a list or array, the last one repeated `pad` more times."""
  if isinstance(x, (list, tuple)):
    return list(x[lo:hi]) + [x[hi - 1]] * pad
  x = np.asarray(x)[lo:hi]
  return np.concatenate([x, np.repeat(x[-1:], pad, axis=0)], axis=0) if pad else x


def _think_part(completion: str) -> str:
  start = completion.find("<think>")
  if start < 0:
    return ""
  end = completion.find("</think>", start)
  return completion[start + len("<think>"):end if end >= 0 else None]
