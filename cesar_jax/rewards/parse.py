"""Structure of completions from token ids: format, spans, the chosen option (jitted).

Everything every component needs is computed once here (`Parsed`), vectorised over the batch,
mostly by the single token scan of `scan.py`; the definitions are those of `reference.py`.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from cesar_jax.rewards import scan as scan_lib
from cesar_jax.rewards import tables as tbl


class Parsed(NamedTuple):
  """Per completion ([B]); token positions are T when the tag is absent."""
  format_ok: jax.Array  # bool: well formed (in the form the example expects).
  answer_only: jax.Array  # bool: the example expects the answer-only form.
  think_tokens: jax.Array  # int32: tokens between the think tags (0 unless format_ok).
  has_answer: jax.Array  # bool: a first <answer> has a </answer> after it.
  chosen: jax.Array  # int32: option the answer chooses, -1 if none.
  scan: scan_lib.Scan  # Words, tag positions, keyword bit sets, concept sort keys.


class Batch(NamedTuple):
  """What a reward component sees (see `registry`)."""
  parsed: Parsed
  examples: Mapping[str, jax.Array]  # One row per completion (encode_examples).
  tables: Mapping[str, jax.Array]
  static: tbl.Static
  ids: jax.Array  # int32[B, T]
  lengths: jax.Array  # int32[B]


def _chosen(sc: scan_lib.Scan, has_answer, examples):
  """The option the answer's words name (-1 if none or several).

  The answer's words are read backwards from its last word by following `prev` links, one word
  a step, for as many steps as the longest answer in the batch that a pattern could match
  (patterns are stored reversed by encode_examples); each step compares one word of every
  pattern.
  """
  pat_keys, pat_len = examples["pattern_keys"], examples["pattern_len"]  # [B, NO, 3, K, 2]
  k = pat_keys.shape[3]
  n = sc.answer_words
  steps = jnp.max(jnp.where(n <= k, n, 0))

  def step(state):
    i, cur, match = state
    key = jnp.stack([scan_lib.take_slots(sc.k1, cur), scan_lib.take_slots(sc.k2, cur)], -1)
    want = jax.lax.dynamic_index_in_dim(pat_keys, i, axis=3, keepdims=False)  # [B, NO, 3, 2]
    same = jnp.all(key[:, None, None, :] == want, axis=-1)
    return i + 1, scan_lib.take_slots(sc.prev, cur), match & (same | (i >= pat_len))
  match = (pat_len == n[:, None, None]) & (pat_len > 0)
  _, _, match = jax.lax.while_loop(lambda state: state[0] < steps, step,
                                   (jnp.int32(0), sc.last_answer_word, match))
  named = jnp.any(match, axis=-1) & has_answer[:, None]  # [B, NO]
  return jnp.where(named.sum(axis=1) == 1, jnp.argmax(named, axis=1), -1).astype(jnp.int32)


def parse(ids: jax.Array, lengths: jax.Array, examples: Mapping[str, Any],
          tables: Mapping[str, jax.Array], static: tbl.Static,
          config: ml_collections.FrozenConfigDict) -> Parsed:
  """ids int32[B, T] right-padded, lengths int32[B] -> Parsed."""
  t = ids.shape[1]
  answer_only = examples["answer_only"]
  sc = scan_lib.scan(tables, static, config, ids, lengths, answer_only)
  ok = sc.state == tbl.DONE
  has_answer = sc.answer_close < t
  think_tokens = jnp.where(ok & ~answer_only, sc.think_close - sc.think_open - 1, 0)
  return Parsed(ok, answer_only, think_tokens, has_answer, _chosen(sc, has_answer, examples), sc)


def gather_examples(examples: Mapping[str, Any], batch_size: int) -> dict[str, jax.Array]:
  """One row per completion: applies `sample_to_example` when present (see examples.py)."""
  examples = dict(examples)
  index = examples.pop("sample_to_example", None)
  if index is not None:
    return {k: jnp.asarray(v)[index] for k, v in examples.items()}
  for k, v in examples.items():
    if v.shape[0] != batch_size:
      raise ValueError(f"reward example array {k!r} has {v.shape[0]} rows for {batch_size} "
                       "completions; repeat it per sample or pass 'sample_to_example'")
  return {k: jnp.asarray(v) for k, v in examples.items()}
