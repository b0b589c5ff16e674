"""The reward function: `build` (for the trainer) and `score_texts` (for users and tests).

    reward_fn = rewards.build(config.reward, tokenizer)       # once: tables from the vocabulary
    arrays = rewards.encode_examples(prompts, tokenizer, config.reward)   # host, once per prompt
    out = reward_fn(completion_ids, lengths, rewards.repeat(arrays, G))   # inside jit
    out["total"], out["accuracy"], ...                                    # f32[B] each

With host-side Python components in the config (`registry.register_python`), the trainer
also computes their values for the rows it holds and passes them in:

    names, values = rewards.host_values(config.reward, texts, examples)  # f32[B, C], host
    out = reward_fn(completion_ids, lengths, arrays, values)              # inside jit

`RewardFn` is a pytree (its tables are leaves, its static facts metadata), so it can be closed
over or passed into a jitted function as an argument. The numeric knobs of the built-in
sections (weights, keyword caps, max_think_tokens, min_word_length) are traced values in
`tables["params"]`, so changing them does not recompile; the rest of the config is static.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cesar_jax import tokenizers as tok_lib
from cesar_jax.rewards import examples as ex_lib
from cesar_jax.rewards import host as host_lib
from cesar_jax.rewards import parse as parse_lib
from cesar_jax.rewards import registry
from cesar_jax.rewards import tables as tbl


@dataclasses.dataclass(frozen=True)
class RewardFn:
  """`(completion_ids int32[B, T], lengths int32[B], example_arrays) -> {name: f32[B]}`.

  completion_ids: the sampled continuation after `<|im_start|>assistant\\n`, right-padded;
  lengths: tokens before padding (the stop token `<|im_end|>` excluded). A completion that hit
  the length limit is scored as it is (not well formed unless its tags closed).
  example_arrays: `encode_examples` output, one row per completion, or one row per prompt plus
  `sample_to_example: int32[B]`.
  host_values: f32[B, len(host_names)], the Python components' values of these rows
  (`host.host_values`, same rows in the same order); required when `host_names` is not empty.
  Returns one f32[B] per component of `config.weights` (in that order) and "total".
  `config` is the static part of the reward config (see `static_config`).
  """
  tables: Mapping[str, Any]
  static: tbl.Static
  config: ml_collections.FrozenConfigDict
  names: tuple[str, ...]  # Components, in config.weights order.
  host_names: tuple[str, ...] = ()  # The Python ones among them (columns of host_values).

  def __call__(self, completion_ids: jax.Array, lengths: jax.Array,
               example_arrays: Mapping[str, Any],
               host_values: jax.Array | None = None) -> dict[str, jax.Array]:
    ids = jnp.asarray(completion_ids, jnp.int32)
    lengths = jnp.minimum(jnp.asarray(lengths, jnp.int32), ids.shape[1])
    if self.host_names:
      want = (ids.shape[0], len(self.host_names))
      if host_values is None or tuple(host_values.shape) != want:
        got = None if host_values is None else tuple(host_values.shape)
        raise ValueError(f"RewardFn: host_values of shape {want} needed for the Python "
                         f"components {self.host_names} (rewards.host_values), got {got}")
    examples = parse_lib.gather_examples(example_arrays, ids.shape[0])
    parsed = parse_lib.parse(ids, lengths, examples, self.tables, self.static, self.config)
    batch = parse_lib.Batch(parsed, examples, self.tables, self.static, ids, lengths)
    out, total = {}, jnp.zeros(ids.shape[:1], jnp.float32)
    weights = self.tables["params"]["weights"]
    for i, name in enumerate(self.names):
      if name in self.host_names:
        value = jnp.asarray(host_values, jnp.float32)[:, self.host_names.index(name)]
      else:
        value = registry.get(name)(batch, self.config).astype(jnp.float32)
      out[name] = value
      total = total + weights[i] * value
    out["total"] = total
    return out


jax.tree_util.register_dataclass(RewardFn, data_fields=["tables"],
                                 meta_fields=["static", "config", "names", "host_names"])

# Host-only fields (used to build tables and example arrays) and traced fields: not static.
_NOT_STATIC = (("preset",), ("format",), ("limits",), ("weights",), ("concepts", "stopwords"),
               ("concepts", "extra_stopwords"), ("concepts", "min_word_length"),
               ("overthinking", "max_think_tokens"), ("guard", "min_think_tokens"))


# Config sections only host-side Python components read: not part of the compiled program.
HOST_SECTIONS = ("perception",)


def params(reward_config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """The traced knobs: weights (config order), keyword caps, L_max_output, min word length,
  the guard's minimum think length."""
  kw = reward_config.keywords
  guard = reward_config.get("guard", None) or {}
  return {
      "weights": jnp.asarray([float(w) for w in reward_config.weights.values()], jnp.float32),
      "caps": jnp.asarray([float(kw[f].cap) for f in tbl.FAMILIES], jnp.float32),
      "max_think_tokens": jnp.asarray(float(reward_config.overthinking.max_think_tokens),
                                      jnp.float32),
      "min_word_length": jnp.asarray(int(reward_config.concepts.min_word_length), jnp.int32),
      "min_think_tokens": jnp.asarray(int(guard.get("min_think_tokens", 0)), jnp.int32),
  }


def static_config(reward_config: ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
  """The config minus host-only and traced fields (and keyword phrase lists): what may change
  the compiled program. Sections added for user components stay whole, but for sections only
  Python components read (host side: `perception`)."""
  d = reward_config.to_dict()
  for path in _NOT_STATIC:
    node = d
    for k in path[:-1]:
      node = node.get(k, {})
    node.pop(path[-1], None)
  for section in HOST_SECTIONS:
    d.pop(section, None)
  for family in tbl.FAMILIES:
    d.get("keywords", {}).get(family, {}).pop("phrases", None)
    d.get("keywords", {}).get(family, {}).pop("cap", None)
  return ml_collections.FrozenConfigDict(d)


def build(reward_config: ml_collections.ConfigDict, tokenizer: tok_lib.Tokenizer) -> RewardFn:
  """Builds the tables (one pass over the vocabulary, numpy) and returns the reward function."""
  for name in reward_config.weights.keys():
    registry.get(name)  # Unknown names fail here, naming the key.
  tables, static = tbl.build_tables(tokenizer, reward_config)
  tables = {k: jnp.asarray(v) for k, v in tables.items()}
  tables["params"] = params(reward_config)
  return RewardFn(tables, static, static_config(reward_config),
                  tuple(reward_config.weights.keys()), host_lib.python_names(reward_config))


def encode_examples(examples: Sequence[Mapping[str, Any]], tokenizer: tok_lib.Tokenizer | None,
                    reward_config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """Per-example arrays (numpy, fixed shapes; see `examples.encode_examples`).

  `tokenizer` is not needed today (the example side works on words) and may be None.
  """
  del tokenizer
  return ex_lib.encode_examples(examples, reward_config)


_CACHE: dict[tuple[int, str], tuple[tok_lib.Tokenizer, RewardFn]] = {}


def cached_build(reward_config: ml_collections.ConfigDict,
                 tokenizer: tok_lib.Tokenizer) -> RewardFn:
  """`build`, memoised on (tokenizer object, config contents)."""
  cache_key = (id(tokenizer), json.dumps(reward_config.to_dict(), sort_keys=True, default=str))
  hit = _CACHE.get(cache_key)
  if hit is None or hit[0] is not tokenizer:
    if len(_CACHE) >= 8:
      _CACHE.clear()
    hit = _CACHE[cache_key] = (tokenizer, build(reward_config, tokenizer))
  return hit[1]


@jax.jit
def apply(reward_fn: RewardFn, completion_ids: jax.Array, lengths: jax.Array,
          example_arrays: Mapping[str, Any],
          host_values: jax.Array | None = None) -> dict[str, jax.Array]:
  """`reward_fn(...)` under jit (the function is an argument, so its tables are not constants)."""
  return reward_fn(completion_ids, lengths, example_arrays, host_values)


def _bucket(n: int, minimum: int) -> int:
  """The next power of two >= max(n, minimum)."""
  return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def pad_ids(batch: Sequence[Sequence[int]], pad_id: int, multiple: int = 64, rows: int = 0
            ) -> tuple[np.ndarray, np.ndarray]:
  """Right-pads token lists to a multiple of `multiple` tokens and `rows` rows (few distinct
  shapes, few compiles); padding rows have length 0."""
  lengths = np.zeros([max(rows, len(batch))], np.int32)
  lengths[:len(batch)] = [len(x) for x in batch]
  t = max(multiple, -(-int(lengths.max(initial=0)) // multiple) * multiple)
  ids = np.full([len(lengths), t], pad_id, np.int32)
  for i, x in enumerate(batch):
    ids[i, :len(x)] = x
  return ids, lengths


def score_texts(completions: Sequence[str], examples: Sequence[Mapping[str, Any]],
                reward_config: ml_collections.ConfigDict,
                tokenizer: tok_lib.Tokenizer) -> dict[str, np.ndarray]:
  """Scores completion texts with the jitted token-id path (same signature and results as
  `reference.score_texts`): tokenises, pads, and runs `build(...)` on the ids (Python
  components on the texts, `host.host_values`)."""
  if len(completions) != len(examples):
    raise ValueError(f"score_texts: {len(completions)} completions but {len(examples)} examples")
  if not completions:
    return {k: np.zeros([0], np.float32) for k in list(reward_config.weights.keys()) + ["total"]}
  fn = cached_build(reward_config, tokenizer)
  n = len(completions)
  ids, lengths = pad_ids(tokenizer.encode_batch(list(completions)), tokenizer.pad_id,
                         rows=_bucket(n, 8))
  arrays = encode_examples(examples, tokenizer, reward_config)
  arrays = {k: np.concatenate([v, np.repeat(v[:1], len(ids) - n, axis=0)]) for k, v in
            arrays.items()}
  _, values = host_lib.host_values(reward_config, completions, examples, tokenizer=tokenizer)
  values = np.concatenate([values, np.zeros([len(ids) - n, values.shape[1]], np.float32)])
  return {k: np.asarray(v)[:n] for k, v in apply(fn, ids, lengths, arrays, values).items()}
