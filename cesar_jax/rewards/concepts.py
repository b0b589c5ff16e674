"""Concept-set sizes for the consistency reward, on device, exactly.

Counts per completion: |C(t)|, |C(t) & C(Q)|, |C(t) & C(y_hat)| (chosen option), |C(a)| and
|C(t) & C(a)| (a = the answer's words, used when the answer chooses no option).

Distinct counting needs equal concepts side by side, so each row's entries are sorted once, on
one int32 per slot (a bitonic network over the slot-major [W, B] keys; on XLA:CPU `lax.sort` of
several arrays, or even of one, is several times slower). The scan packs that key: the top
bits 1..30 of the concept's first hash key, its slot in the low bits (the slot recovers the rest of
the entry by a gather). Within a run of equal prefixes entries are in text order, so think
entries (slots up to </think>) precede answer entries. Two distinct concepts of one row sharing
the prefix ("messy" row; about 3e-4 per row at 100 concepts and a 24-bit prefix) would be
counted as one: such rows are found with the full keys and recounted by an exact (k1, k2, slot)
sort, a few rows at a time.

Membership in C(Q) and in C(option) is a lookup per sorted entry (row-local, so cache
friendly) in the example's cuckoo table (`examples.encode_examples`: two candidate slots,
full-key compare).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cesar_jax.rewards import examples as ex_lib
from cesar_jax.rewards import parse as parse_lib
from cesar_jax.rewards import scan as scan_lib

INT_MAX = jnp.iinfo(jnp.int32).max


class Counts(NamedTuple):
  think: jax.Array  # int32[B]: |C(t)|
  think_question: jax.Array  # |C(t) & C(Q)|
  think_option: jax.Array  # |C(t) & C(chosen option)| (0 when none is chosen)
  answer: jax.Array  # |C(a)|
  think_answer: jax.Array  # |C(t) & C(a)|


def bitonic_sort(x: jax.Array) -> jax.Array:
  """Sorts int32[W, B] along the first axis by a bitonic network (rows padded to a power of two
  with INT_MAX and cut back): log2(W) (log2(W) + 1) / 2 min/max passes between whole [.., B]
  rows, vector ops along the batch. On XLA:CPU it is 3x faster than `lax.sort` of [B, W]."""
  width = x.shape[0]
  k = 1 << max(0, (width - 1).bit_length())
  x = jnp.pad(x, ((0, k - width), (0, 0)), constant_values=INT_MAX)
  size = 2
  while size <= k:
    stride = size // 2
    while stride >= 1:
      y = x.reshape(k // (2 * stride), 2, stride, *x.shape[1:])
      lo, hi = jnp.minimum(y[:, 0], y[:, 1]), jnp.maximum(y[:, 0], y[:, 1])
      down = ((np.arange(k // (2 * stride)) * 2 * stride) // size % 2 == 1)
      down = down.reshape(-1, *[1] * x.ndim)
      x = jnp.stack([jnp.where(down, hi, lo), jnp.where(down, lo, hi)], 1).reshape(x.shape)
      stride //= 2
    size *= 2
  return x[:width]


def _question_info(examples, k1: jax.Array, k2: jax.Array, bits: int) -> jax.Array:
  """int32[R, J]: cuckoo-table info of keys k1, k2: [R, J] (0 when not in C(Q))."""
  rows, size = examples["question_k1"].shape
  salt = examples["question_salt"][:, None]
  row = jnp.arange(rows, dtype=jnp.int32)[:, None] * size
  table = {k: examples[f"question_{k}"].reshape(-1) for k in ("k1", "k2", "info")}
  take = lambda name, at: jnp.take(table[name], at, mode="clip")
  shift = 32 - bits
  h1 = (((k1 ^ salt).astype(jnp.uint32) * jnp.uint32(ex_lib.CUCKOO_M1)) >> shift).astype(
      jnp.int32) + row
  h2 = (((k2 ^ salt).astype(jnp.uint32) * jnp.uint32(ex_lib.CUCKOO_M2)) >> shift).astype(
      jnp.int32) + row
  at = jnp.where((take("k1", h1) == k1) & (take("k2", h1) == k2), h1, h2)
  found = (take("k1", at) == k1) & (take("k2", at) == k2)
  return jnp.where(found, take("info", at), 0)


def _count_sorted(same, label, qinfo, chosen) -> Counts:
  """Counts from entries sorted so that equal concepts are adjacent, think before answer.

  same: bool[R, W] (same concept as the previous entry); label: 0 think, 1 answer, 3 none.
  """
  first_t = (label == 0) & ~same
  prev_label = jnp.concatenate([jnp.full_like(label[:, :1], 3), label[:, :-1]], axis=1)
  first_a = (label == 1) & (~same | (prev_label == 0))
  in_option = ((qinfo >> (1 + jnp.maximum(chosen, 0))[:, None]) & 1) > 0
  return Counts(
      think=first_t.sum(1), think_question=(first_t & ((qinfo & 1) > 0)).sum(1),
      think_option=(first_t & in_option & (chosen >= 0)[:, None]).sum(1),
      answer=first_a.sum(1), think_answer=(first_a & same).sum(1))


def _label(slot, think_end):
  """0 for think entries (slot <= think_end[r]), 1 for answer entries."""
  return jnp.where(slot <= think_end[:, None], 0, 1)


def _exact(sort_key, k1, k2, think_end, examples, chosen, bits) -> Counts:
  """Counts by a (k1, k2, slot) sort of rows [R, W]."""
  width = sort_key.shape[1]
  slot = jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32)[None, :], sort_key.shape)
  inc = sort_key != INT_MAX
  k1, k2, slot = jax.lax.sort((jnp.where(inc, k1, INT_MAX), jnp.where(inc, k2, INT_MAX),
                               jnp.where(inc, slot, width)), dimension=1, num_keys=3)
  valid = slot < width
  label = jnp.where(valid, _label(slot, think_end), 3)
  same = valid & jnp.concatenate(
      [jnp.zeros_like(valid[:, :1]), (k1[:, 1:] == k1[:, :-1]) & (k2[:, 1:] == k2[:, :-1])],
      axis=1)
  return _count_sorted(same, label, _question_info(examples, k1, k2, bits), chosen)


def counts(batch: parse_lib.Batch, config: ml_collections.FrozenConfigDict) -> Counts:
  p = batch.parsed
  sc = p.scan
  width, bsz = sc.sort_key.shape
  slots = width // batch.ids.shape[1]
  bits = batch.examples["question_k1"].shape[1].bit_length() - 1
  chosen = p.chosen
  # Think entries end with the word </think> ends (slot tc * S); none in the answer-only form.
  think_end = jnp.where(p.answer_only, -1, sc.think_close * slots)

  # Fast path: one single-array sort of (prefix of k1 | slot) per row.
  idx_bits = scan_lib.slot_bits(width)
  low = (1 << idx_bits) - 1
  packed = bitonic_sort(sc.sort_key).T  # [B, W]
  valid = jnp.arange(width)[None, :] < sc.num_concepts[:, None]
  slot = packed & low
  label = jnp.where(valid, _label(slot, think_end), 3)
  k1, k2 = scan_lib.take_rows(sc.k1, slot), scan_lib.take_rows(sc.k2, slot)
  prefix = packed >> idx_bits
  same = valid & jnp.concatenate(
      [jnp.zeros_like(valid[:, :1]), prefix[:, 1:] == prefix[:, :-1]], axis=1)
  fast = _count_sorted(same, label, _question_info(batch.examples, k1, k2, bits), chosen)
  messy = jnp.any(same & jnp.concatenate(
      [jnp.zeros_like(valid[:, :1]), (k1[:, 1:] != k1[:, :-1]) | (k2[:, 1:] != k2[:, :-1])],
      axis=1), axis=1)

  # Messy rows: recount exactly, m rows a round (usually one round or none). With W / 4
  # distinct concepts a row, about B * (W / 4)**2 / 2 / 2**(30 - slot bits) rows are messy.
  expected = bsz * (width / 4) ** 2 / 2.0 ** (31 - idx_bits)
  m = int(min(bsz, 16 + 2 * expected))
  examples = {k: v for k, v in batch.examples.items() if k.startswith("question_")}

  def recount(state):
    counts, todo = state
    rows = jnp.nonzero(todo, size=m, fill_value=0)[0]
    pick = lambda x: x[:, rows].T
    fixed = _exact(pick(sc.sort_key), pick(sc.k1), pick(sc.k2), think_end[rows],
                   {k: v[rows] for k, v in examples.items()}, chosen[rows], bits)
    return Counts(*(c.at[rows].set(f) for c, f in zip(counts, fixed))), todo.at[rows].set(False)
  counts, _ = jax.lax.while_loop(lambda state: jnp.any(state[1]), recount, (fast, messy))
  return counts
