"""One pass over the tokens of a batch of completions: words, format, spans, keywords (jitted).

A `lax.scan` over token positions, vectorised over the batch, does everything that follows the
text in order, so that nothing of size [B, T] but the word keys is ever materialised (on
XLA:CPU each such pass costs more than the arithmetic in it):

* Words (definition: `text.py`): the carry holds the word in progress (four hash lanes, its
  length, whether its last two bytes are "s"). A token with a separator ends it after appending
  its leading fragment (the "boundary word") and starts the next one with its trailing
  fragment; complete inner words come from the token table. Word slots are `t * S + k`
  (k = 0: the boundary word ended by token t; k >= 1: inner words of token t): text order.
* Format: an automaton over token classes (`tables.format_automaton`), per row in the think or
  the answer-only form; tag positions.
* Regions: a word is in the think part when it ends while the automaton is inside the think
  tags, in the answer when it ends between the first <answer> and the first </answer> after it
  (tags are separators: no word straddles one).
* Keywords: the carry holds the trie nodes of the keyword-segment prefixes ending at the last
  word; each word advances them (`tables.keyword_tables`); completed segments set bits in a
  per-row bit set; gap phrases keep the first end / last start rank of their segments.
* Concepts: each think or answer concept (not a stopword, long enough) emits a sort key
  (prefix of its first hash key | slot) for `concepts.py`.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from cesar_jax.rewards import tables as tbl
from cesar_jax.rewards import text

_PRIMES = [int(p) for p in text.PRIMES]
_BASE_INV = [int(b) for b in text.BASE_INV]
INT_MAX = jnp.iinfo(jnp.int32).max
_COLUMNS = tbl.TOKEN_COLUMNS
PREFIX_BITS = 30  # Tests lower it to make prefixes collide ("messy" rows, concepts.py).


class Scan(NamedTuple):
  """Per slot ([W, B], W = T * S, slot-major) and per completion ([B]) results."""
  sort_key: jax.Array  # int32[W, B]: (k1 bits 1..30 | slot) of think / answer concepts, else
  #                      INT_MAX; see concepts.py.
  k1: jax.Array  # int32[W, B]: keys of the normalised word ending in each slot.
  k2: jax.Array
  prev: jax.Array  # int32[W, B]: slot of the previous word (-1 if none).
  state: jax.Array  # int32[B]: final automaton state (tables.DONE = well formed).
  think_open: jax.Array  # int32[B]: first <think> (T if none).
  think_close: jax.Array  # first </think>
  answer_open: jax.Array  # first <answer>
  answer_close: jax.Array  # first </answer> after answer_open
  num_concepts: jax.Array  # int32[B]: entries of sort_key that are not INT_MAX.
  answer_words: jax.Array  # int32[B]: words in the answer.
  last_answer_word: jax.Array  # int32[B]: slot of the answer's last word (-1 if none).
  keyword_bits: jax.Array  # int32[B, n]: bit sets of keyword segments found in the think part.
  gap_first_end: jax.Array  # int32[B, G]: rank of the first end of each gap phrase's 1st part.
  gap_last_start: jax.Array  # int32[B, G]: rank of the last start of its 2nd part.


def bits(x, shift, width=1):
  return (x >> shift) & ((1 << width) - 1)


def _lanes(packed01, packed23):
  u01 = packed01.astype(jnp.uint32)
  u23 = packed23.astype(jnp.uint32)
  return [u01 >> 16, u01 & 0xFFFF, u23 >> 16, u23 & 0xFFFF]


def _key(lanes):
  k1 = (lanes[0] << 16) | lanes[1]
  k2 = (lanes[2] << 16) | lanes[3]
  return (jax.lax.bitcast_convert_type(k1, jnp.int32), jax.lax.bitcast_convert_type(k2, jnp.int32))


def _strip_s(lanes, strip):
  """Hash lanes of the word without its final "s" where `strip` (h = h' * B + "s")."""
  out = []
  for h, p, inv in zip(lanes, _PRIMES, _BASE_INV):
    stripped = ((h + (p - text.S_BYTE)) % p) * inv % p  # < p * p < 2**32.
    out.append(jnp.where(strip, stripped, h))
  return out


def slot_bits(width: int) -> int:
  """Low bits of a sort key that hold the slot."""
  return max(1, (width - 1).bit_length())


def scan(tables: Mapping[str, jax.Array], static: tbl.Static,
         config: ml_collections.FrozenConfigDict, ids: jax.Array, lengths: jax.Array,
         answer_only: jax.Array) -> Scan:
  """ids int32[B, T] right-padded, lengths int32[B], answer_only bool[B] -> Scan."""
  bsz, t = ids.shape
  vocab = static.vocab_size
  s = 1 + static.num_inner
  width = t * s
  low = (1 << slot_bits(width)) - 1
  # Bits 1..PREFIX_BITS of k1 above the slot; keys stay below INT_MAX, the "no concept" key.
  prefix_mask = ((1 << PREFIX_BITS) - 1) & ~low
  strip_plural_s = bool(config.concepts.strip_plural_s)
  min_len = tables["params"]["min_word_length"]
  base = static.num_keyword_words + 1
  levels = len(static.segment_counts)
  mult_f, m_bits, mult_g, g_bits = static.known_hash
  words_per_level = [-(-c // 32) for c in static.segment_counts]
  n_words = sum(words_per_level)
  gap_first = [g[1] for g in static.gap_phrases]
  gap_second = [g[2] for g in static.gap_phrases]
  in_len = jnp.arange(t)[None, :] < lengths[:, None]
  ids_t = jnp.where(in_len, jnp.where((ids >= 0) & (ids < vocab), ids, vocab + 1), vocab).T
  form = answer_only.astype(jnp.int32) * (tbl.NUM_STATES * tbl.NUM_CLASSES)
  take = lambda name, idx: jnp.take(tables[name], idx, mode="clip")

  def visit(c, out, k1, k2, length, valid, slot, think, answer):
    """Processes one word (possibly absent: `valid`) in text order."""
    u = k1.astype(jnp.uint32)
    at = (((u * jnp.uint32(mult_f)) >> (32 - m_bits)).astype(jnp.int32)
          + take("known_disp", ((u * jnp.uint32(mult_g)) >> (32 - g_bits)).astype(jnp.int32))
          ) & ((1 << m_bits) - 1)
    hit = valid & (take("known_k1", at) == k1) & (take("known_k2", at) == k2)
    info = jnp.where(hit, take("known_info", at), 0)
    stop, kw = (info & 1) > 0, (info >> 1) - 1
    include = valid & ~stop & (length >= min_len) & (think | answer)
    out["sort_key"].append(jnp.where(include, ((k1 >> 1) & prefix_mask) | slot, INT_MAX))
    out["k1"].append(k1)
    out["k2"].append(k2)
    out["prev"].append(c["last"])
    c["last"] = jnp.where(valid, slot, c["last"])
    c["n_inc"] += include.astype(jnp.int32)
    in_answer = valid & answer
    c["n_ans"] += in_answer.astype(jnp.int32)
    c["last_ans"] = jnp.where(in_answer, slot, c["last_ans"])
    # Keyword segments ending at this word: walk the trie from the prefixes ending at the
    # previous word (c["prefix"][n - 2]: id + 1 of its (n - 1)-word prefix, 0 if none).
    digit = jnp.where(valid & think & (kw >= 0), kw + 1, 0)
    rank = c["rank"]
    prefixes = []
    for n in range(1, levels + 1):
      row = 0 if n == 1 else c["prefix"][n - 2] - 1
      entry = jnp.where((digit > 0) & (row >= 0), take(f"trie_{n}", row * base + digit), 0)
      prefixes.append(entry & 0xFFFF)
      local = (entry >> 16) - 1
      found = local >= 0
      offset = sum(words_per_level[:n - 1])
      for m in range(words_per_level[n - 1]):
        bit = jnp.where(found & ((local >> 5) == m), jnp.left_shift(1, local & 31), 0)
        c["bits"][offset + m] = c["bits"][offset + m] | bit
      for g, (length_g, local_g) in enumerate(gap_first):
        if length_g == n:
          c["first_end"][g] = jnp.where(found & (local == local_g),
                                        jnp.minimum(c["first_end"][g], rank), c["first_end"][g])
      for g, (length_g, local_g) in enumerate(gap_second):
        if length_g == n:
          c["last_start"][g] = jnp.where(found & (local == local_g), rank - n + 1,
                                         c["last_start"][g])
    c["prefix"] = [jnp.where(valid, new, old) for new, old in zip(prefixes[:levels - 1],
                                                                   c["prefix"])]
    c["rank"] = rank + valid.astype(jnp.int32)

  def step(c, x):
    tok, pos = x
    c = dict(c, bits=list(c["bits"]), prefix=list(c["prefix"]), first_end=list(c["first_end"]),
             last_start=list(c["last_start"]))
    col = {k: take(k, tok) for k in _COLUMNS}  # One gather per column (XLA:CPU: faster than rows)
    meta = col["meta"]
    has_sep = bits(meta, tbl.HAS_SEP) > 0
    lead_len = bits(meta, tbl.LEAD_LEN_SHIFT, 8)
    lead, pw = _lanes(col["lead01"], col["lead23"]), _lanes(col["pow01"], col["pow23"])
    h = c["h"]
    eh = [(hh * pp + ll) % p for hh, pp, ll, p in zip(h, pw, lead, _PRIMES)]  # < p*p <= 2**32
    en = c["n"] + lead_len
    el1 = jnp.where(lead_len >= 1, bits(meta, tbl.LEAD_L1S) > 0, c["l1"])
    el2 = jnp.where(lead_len >= 2, bits(meta, tbl.LEAD_L2S) > 0,
                    jnp.where(lead_len == 1, c["l1"], c["l2"]))
    strip = (en >= 4) & el1 & ~el2 if strip_plural_s else jnp.zeros_like(el1)
    k1, k2 = _key(_strip_s(eh, strip))
    think = c["state"] == tbl.IN_THINK
    answer = c["ans"] == 1
    out = {"sort_key": [], "k1": [], "k2": [], "prev": []}
    visit(c, out, k1, k2, jnp.minimum(en, 255), has_sep & (en > 0), pos * s, think, answer)
    if static.num_inner:
      n_inner = bits(meta, tbl.N_INNER_SHIFT, 3)
      inner = [jnp.take(tables[k], tok, axis=0, mode="clip")  # [B, S - 1]
               for k in ("inner_k1", "inner_k2", "inner_len")]
      for j in range(static.num_inner):
        visit(c, out, inner[0][:, j], inner[1][:, j], inner[2][:, j], n_inner > j,
              pos * s + 1 + j, think, answer)
    # Word in progress after this token.
    trail = _lanes(col["trail01"], col["trail23"])
    c["h"] = [jnp.where(has_sep, a, b) for a, b in zip(trail, eh)]
    c["n"] = jnp.where(has_sep, bits(meta, tbl.TRAIL_LEN_SHIFT, 8), en)
    c["l1"] = jnp.where(has_sep, bits(meta, tbl.TRAIL_L1S) > 0, el1)
    c["l2"] = jnp.where(has_sep, bits(meta, tbl.TRAIL_L2S) > 0, el2)
    # Format automaton and tag positions.
    cls = bits(meta, tbl.CLASS_SHIFT, 3)
    c["state"] = take("automaton", form + c["state"] * tbl.NUM_CLASSES + cls)
    first = lambda name, k: jnp.where((cls == k) & (c[name] == t), pos, c[name])
    c["to"], c["tc"] = first("to", tbl.CLASS_TO), first("tc", tbl.CLASS_TC)
    c["ao"] = first("ao", tbl.CLASS_AO)
    opens = (c["ans"] == 0) & (cls == tbl.CLASS_AO)
    closes = (c["ans"] == 1) & (cls == tbl.CLASS_AC)
    c["ac"] = jnp.where(closes, pos, c["ac"])
    c["ans"] = jnp.where(opens, 1, jnp.where(closes, 2, c["ans"]))
    return c, {k: jnp.stack(v) for k, v in out.items()}

  zeros = jnp.zeros([bsz], jnp.int32)
  init = dict(
      h=[jnp.zeros([bsz], jnp.uint32)] * 4, n=zeros, l1=zeros > 0, l2=zeros > 0,
      last=zeros - 1, state=zeros + tbl.START, ans=zeros, to=zeros + t, tc=zeros + t,
      ao=zeros + t, ac=zeros + t, n_inc=zeros, n_ans=zeros, last_ans=zeros - 1, rank=zeros,
      prefix=[zeros] * (levels - 1), bits=[zeros] * n_words,
      first_end=[zeros + INT_MAX] * len(gap_first), last_start=[zeros - 1] * len(gap_second))
  c, out = jax.lax.scan(step, init, (ids_t, jnp.arange(t, dtype=jnp.int32)))
  per_slot = {k: v.reshape(width, bsz) for k, v in out.items()}  # [T, S, B] -> [W, B]
  stack = lambda xs: jnp.stack(xs, axis=1) if xs else jnp.zeros([bsz, 0], jnp.int32)
  return Scan(
      **per_slot, state=c["state"], think_open=c["to"], think_close=c["tc"],
      answer_open=c["ao"], answer_close=c["ac"], num_concepts=c["n_inc"],
      answer_words=c["n_ans"], last_answer_word=c["last_ans"], keyword_bits=stack(c["bits"]),
      gap_first_end=stack(c["first_end"]), gap_last_start=stack(c["last_start"]))


def take_slots(x: jax.Array, slot: jax.Array) -> jax.Array:
  """x[slot[..., b], b] for slot-major x: [W, B] and slot: [..., B] (clipped to [0, W))."""
  w, b = x.shape
  flat = jnp.clip(slot, 0, w - 1) * b + jnp.arange(b, dtype=jnp.int32)
  return jnp.take(x.reshape(-1), flat, mode="clip")


def take_rows(x: jax.Array, slot: jax.Array) -> jax.Array:
  """x[slot[b, j], b] for slot-major x: [W, B] and slot: [B, J] -> [B, J]."""
  w, b = x.shape
  flat = jnp.clip(slot, 0, w - 1) * b + jnp.arange(b, dtype=jnp.int32)[:, None]
  return jnp.take(x.reshape(-1), flat, mode="clip")
