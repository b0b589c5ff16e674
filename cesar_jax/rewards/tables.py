"""Lookup tables built once, in numpy, from the tokenizer and the reward config.

Token tables (one entry per token id; entry V is padding, entry V + 1 an id outside the
vocabulary: both separators). A token's bytes are (lower-cased) `lead sep ... sep trail`: `lead` is
the run of word bytes it starts with (the whole token when it has no separator: it then only
extends the word in progress), `trail` the run it ends with (it starts the next word in
progress), and between them its complete inner words (at most `limits.max_inner_words`;
raising at build, naming the token). Special tokens are separators without bytes. Each is a
1-D column (XLA:CPU gathers columns much faster than rows):
  meta:  bit 0 has a separator, 1 whitespace only, 2/3 lead's last/second-to-last byte is "s",
         4/5 same for trail, 6-8 number of inner words, 9-16 lead length, 17-24 trail length,
         25-27 class for the format automaton (CLASS_*).
  lead01, lead23, pow01, pow23, trail01, trail23: hash lanes (text.py) packed two per uint32
         (lane a << 16 | lane b); pow = BASE**len(lead).
  inner_k1, inner_k2, inner_len: [V + 2, num_inner] normalised keys and lengths of inner words.

Keyword phrases are split into segments ("if ... then": "if", "then"); a segment of n words
has a "local" id among the segments of n words, its bit in the level-n bit set of segments
found in a row. Segments are matched word by word through a trie of their prefixes (one small
direct-indexed table per level, `trie_n`). Known words (stopwords and keyword words) are looked
up through a small perfect hash table (`displacement_hash`); a lookup reads one slot and
compares the full key.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import ml_collections
import numpy as np

from cesar_jax import tokenizers as tok_lib
from cesar_jax.rewards import examples as ex_lib
from cesar_jax.rewards import text

FAMILIES = ("pattern", "logic", "domain")
TOKEN_COLUMNS = ("meta", "lead01", "lead23", "pow01", "pow23", "trail01", "trail23")
# meta bits.
HAS_SEP, IS_WS, LEAD_L1S, LEAD_L2S, TRAIL_L1S, TRAIL_L2S = 0, 1, 2, 3, 4, 5
N_INNER_SHIFT, LEAD_LEN_SHIFT, TRAIL_LEN_SHIFT, CLASS_SHIFT = 6, 9, 17, 25
# Token classes of the format automaton.
CLASS_WS, CLASS_OTHER, CLASS_TO, CLASS_TC, CLASS_AO, CLASS_AC, CLASS_PAD = range(7)
MAX_FRAGMENT = 255
MAX_INNER = 7


@dataclasses.dataclass(frozen=True)
class Static:
  """Hashable facts the jitted code branches on (shapes, ids, hash parameters)."""
  vocab_size: int
  num_inner: int  # Inner-word slots per token actually needed by this vocabulary.
  think_open_id: int
  think_close_id: int
  answer_open_id: int
  answer_close_id: int
  num_keyword_words: int
  segment_counts: tuple[int, ...]  # Keyword-phrase segments of 1, 2, ... words.
  known_hash: tuple[int, int, int, int]  # (mult_f, m_bits, mult_g, g_bits), displacement_hash.
  # (phrase, (words, local id) of its first segment, same for its second) for "a ... b".
  gap_phrases: tuple[tuple[int, tuple[int, int], tuple[int, int]], ...]


def slot_of(keys: np.ndarray, mult: int, bits: int) -> np.ndarray:
  keys = np.asarray(keys).astype(np.int64).astype(np.uint64) & np.uint64(0xFFFFFFFF)
  return ((keys * np.uint64(mult)) & np.uint64(0xFFFFFFFF)) >> np.uint64(32 - bits)


def _pack2(a: int, b: int) -> int:
  return int(np.array((a << 16) | b, np.uint32).view(np.int32))


def token_tables(tokenizer: tok_lib.Tokenizer, strip_plural_s: bool,
                 max_inner_words: int) -> tuple[dict[str, np.ndarray], int]:
  """Token columns (see module doc) and the number of inner-word slots needed."""
  vocab = tokenizer.vocab_size
  tag_class = {tokenizer.think_open_id: CLASS_TO, tokenizer.think_close_id: CLASS_TC,
               tokenizer.answer_open_id: CLASS_AO, tokenizer.answer_close_id: CLASS_AC}
  cols = {k: np.zeros([vocab + 2], np.int32)
          for k in ("meta", "lead01", "lead23", "pow01", "pow23", "trail01", "trail23")}
  inner_rows: dict[int, list[tuple[int, ...]]] = {}
  limit = min(max_inner_words, MAX_INNER)
  word_bytes = bytes(text.WORD_BYTES)
  for i in range(vocab):
    b = tokenizer.token_bytes(i).lower()
    lead = len(b) - len(b.lstrip(word_bytes))
    has_sep = not b or lead < len(b)
    trail = len(b) - len(b.rstrip(word_bytes)) if has_sep else 0
    if max(lead, trail) > MAX_FRAGMENT:
      raise ValueError(f"token {i} ({b!r}) has a run of {max(lead, trail)} word bytes > "
                       f"{MAX_FRAGMENT}")
    lead_b, trail_b = b[:lead], b[len(b) - trail:]
    inner = text.WORD_RE.findall(b[lead:len(b) - trail]) if has_sep else []
    if len(inner) > limit:
      raise ValueError(f"token {i} ({b!r}) holds {len(inner)} complete words > "
                       f"limits.max_inner_words={limit}; raise the limit for this tokenizer")
    is_ws = bool(b) and all(c in text.WHITESPACE for c in b)
    cls = tag_class.get(i, CLASS_WS if is_ws else CLASS_OTHER)
    meta = (int(has_sep) << HAS_SEP | int(is_ws) << IS_WS | cls << CLASS_SHIFT
            | int(lead_b[-1:] == b"s") << LEAD_L1S | int(lead_b[-2:-1] == b"s") << LEAD_L2S
            | int(trail_b[-1:] == b"s") << TRAIL_L1S | int(trail_b[-2:-1] == b"s") << TRAIL_L2S
            | len(inner) << N_INNER_SHIFT | lead << LEAD_LEN_SHIFT | trail << TRAIL_LEN_SHIFT)
    cols["meta"][i] = meta
    lanes, pw, tl = text.lanes(lead_b), text.powers(lead), text.lanes(trail_b)
    cols["lead01"][i], cols["lead23"][i] = _pack2(*lanes[:2]), _pack2(*lanes[2:])
    cols["pow01"][i], cols["pow23"][i] = _pack2(*pw[:2]), _pack2(*pw[2:])
    cols["trail01"][i], cols["trail23"][i] = _pack2(*tl[:2]), _pack2(*tl[2:])
    if inner:
      inner_rows[i] = [(*text.key(text.normalize(w, strip_plural_s)), len(w)) for w in inner]
  cols["meta"][vocab] = 1 << HAS_SEP | CLASS_PAD << CLASS_SHIFT  # Padding.
  cols["meta"][vocab + 1] = 1 << HAS_SEP | CLASS_OTHER << CLASS_SHIFT  # Unknown id.
  num_inner = max((len(r) for r in inner_rows.values()), default=0)
  if num_inner:
    arr = np.zeros([vocab + 2, num_inner, 3], np.int32)
    for i, ws in inner_rows.items():
      arr[i, :len(ws)] = ws
    for j, name in enumerate(("inner_k1", "inner_k2", "inner_len")):
      cols[name] = arr[..., j]
  return cols, num_inner


def displacement_hash(keys: Sequence[int], what: str, seed: int = 0):
  """A small perfect hash ("hash and displace"): slot = (f(x) + disp[g(x)]) mod m.

  f(x) = (x * mult_f mod 2**32) >> (32 - m_bits), g(x) the same with mult_g and g_bits. The
  tables stay a few KB (cache resident), unlike a one-level perfect hash (~n**2 slots).
  Returns (mult_f, m_bits, mult_g, g_bits, disp int32[2**g_bits], slot per key).
  """
  keys = np.asarray(keys, np.int64)
  n = max(len(keys), 1)
  m_bits = max(4, int(np.ceil(np.log2(2 * n))))
  g_bits = max(1, int(np.ceil(np.log2(n / 2))))
  m = 1 << m_bits
  rng = np.random.default_rng(seed)
  for _ in range(200):
    mult_f, mult_g = (int(rng.integers(1, 2**32, dtype=np.uint64)) | 1 for _ in range(2))
    f = slot_of(keys, mult_f, m_bits).astype(np.int64)
    g = slot_of(keys, mult_g, g_bits).astype(np.int64)
    groups: dict[int, list[int]] = {}
    for i, b in enumerate(g.tolist()):
      groups.setdefault(b, []).append(i)
    if any(len(set(f[idx].tolist())) < len(idx) for idx in groups.values()):
      continue  # Keys of one group must differ in f.
    used = np.zeros([m], bool)
    disp = np.zeros([1 << g_bits], np.int32)
    slots = np.zeros([len(keys)], np.int64)
    ok = True
    for b, idx in sorted(groups.items(), key=lambda kv: -len(kv[1])):
      for d in range(m):
        at = (f[idx] + d) % m
        if not used[at].any():
          used[at], disp[b], slots[idx] = True, d, at
          break
      else:
        ok = False
        break
    if ok:
      return mult_f, m_bits, mult_g, g_bits, disp, slots
  raise ValueError(f"{what}: no displacement hash found for {n} entries")


def keyword_tables(config: ml_collections.ConfigDict) -> tuple[dict[str, np.ndarray], dict]:
  """Known words (stopwords, keyword words) and keyword phrases; see module doc."""
  strip = bool(config.concepts.strip_plural_s)
  stop = ex_lib.stopword_set(config)
  phrases = []  # (family, weight, segments)
  for f, family in enumerate(FAMILIES):
    for phrase, weight in config.keywords[family].phrases:
      segments = text.phrase_words(str(phrase), strip)
      if len(segments) > 2:
        raise ValueError(f"keyword phrase {phrase!r} (keywords.{family}): at most one '...' gap")
      longest = max(len(s) for s in segments)
      if longest > int(config.limits.max_phrase_words):
        raise ValueError(f"keyword phrase {phrase!r} (keywords.{family}) has {longest} words > "
                         f"limits.max_phrase_words={config.limits.max_phrase_words}")
      phrases.append((f, float(weight), segments))
  kw_words = sorted({w for _, _, segs in phrases for s in segs for w in s})
  known = sorted(set(kw_words) | stop)
  text.check_collisions(known, "reward stopwords and keyword words")
  kw_id = {w: i for i, w in enumerate(kw_words)}
  keys = np.array([text.key(w) for w in known], np.int32).reshape(-1, 2)
  if len(np.unique(keys[:, 0])) != len(known):
    raise ValueError("reward known words: two stopwords / keyword words share their first "
                     "32-bit key; change one (or the hash bases in rewards/text.py)")
  mult_f, m_bits, mult_g, g_bits, disp, slots = displacement_hash(
      keys[:, 0], "reward stopwords and keyword words")
  known_k1 = np.full([1 << m_bits], text.NO_KEY, np.int32)
  known_k2 = np.full([1 << m_bits], text.NO_KEY, np.int32)
  known_info = np.zeros([1 << m_bits], np.int32)  # bit 0: stopword; bits 1..: keyword id + 1.
  for w, (k1, k2), at in zip(known, keys, slots):
    known_k1[at], known_k2[at] = k1, k2
    known_info[at] = int(w in stop) | (kw_id[w] + 1 if w in kw_id else 0) << 1

  # Segments are numbered per length ("local" ids); level n's bit set starts at word offset[n].
  segments = sorted({s for _, _, segs in phrases for s in segs}, key=lambda s: (len(s), s))
  max_seg = max((len(s) for s in segments), default=1)
  counts = [sum(len(s) == n for s in segments) for n in range(1, max_seg + 1)]
  offsets = np.concatenate([[0], np.cumsum([-(-c // 32) for c in counts])]).astype(int)
  local = {}
  for seg in segments:
    local[seg] = sum(len(t) == len(seg) for t in local)
  # Trie of segment prefixes, one table per level: trie_n[(prefix id of the previous n - 1
  # words) * base + keyword id + 1] = (id of this n-word prefix if it extends to a longer
  # segment) + 1 | (local id of the n-word segment it completes) + 1 << 16; 0 = nothing.
  base = len(kw_words) + 1
  prefixes = [sorted({seg[:n] for seg in segments if len(seg) > n}) for n in range(1, max_seg)]
  prefix_id = [{pre: i for i, pre in enumerate(level)} for level in prefixes]
  out = {}
  for n in range(1, max_seg + 1):
    rows = 1 if n == 1 else max(1, len(prefixes[n - 2]))
    trie = np.zeros([rows * base], np.int32)
    grams = {seg[:n] for seg in segments if len(seg) >= n}
    for gram in grams:
      row = 0 if n == 1 else prefix_id[n - 2][gram[:-1]]
      ext = prefix_id[n - 1].get(gram, -1) if n <= len(prefixes) else -1
      seg = local.get(gram, -1) if gram in local else -1
      trie[row * base + kw_id[gram[-1]] + 1] = (ext + 1) | (seg + 1) << 16
    out[f"trie_{n}"] = trie

  def bit_of(seg):  # (word in the concatenated bit sets, bit)
    return offsets[len(seg) - 1] + local[seg] // 32, local[seg] % 32
  out.update({
      "known_k1": known_k1, "known_k2": known_k2, "known_info": known_info,
      "known_disp": disp,
      "phrase_word": np.array([bit_of(segs[0])[0] for _, _, segs in phrases], np.int32),
      "phrase_bit": np.array([bit_of(segs[0])[1] for _, _, segs in phrases], np.int32),
      "phrase_family": np.array([f for f, _, _ in phrases], np.int32),
      "phrase_weight": np.array([w for _, w, _ in phrases], np.float32),
  })
  facts = dict(num_keyword_words=len(kw_words), segment_counts=tuple(counts),
               known_hash=(mult_f, m_bits, mult_g, g_bits),
               gap_phrases=tuple((p, (len(segs[0]), local[segs[0]]), (len(segs[1]), local[segs[1]]))
                                 for p, (_, _, segs) in enumerate(phrases) if len(segs) > 1))
  return out, facts


# Format automaton. States: 0 before <think> (or <answer> in the answer-only form), 1 in the
# think part, 2 between </think> and <answer>, 3 in the answer, 4 after </answer> (accepting),
# 5 failed. Only whitespace may stand outside the tags; padding keeps the state.
START, IN_THINK, BETWEEN, IN_ANSWER, DONE, FAILED = range(6)
NUM_STATES, NUM_CLASSES = 6, 7


def format_automaton() -> np.ndarray:
  """int32[2 (answer-only form?), NUM_STATES, NUM_CLASSES] -> next state."""
  t = np.full([2, NUM_STATES, NUM_CLASSES], FAILED, np.int32)
  for form in (0, 1):
    t[form, :, CLASS_PAD] = np.arange(NUM_STATES)
    t[form, START, CLASS_WS] = START
    t[form, START, CLASS_AO if form else CLASS_TO] = IN_ANSWER if form else IN_THINK
    t[form, IN_THINK, [CLASS_WS, CLASS_OTHER]] = IN_THINK
    t[form, IN_THINK, CLASS_TC] = BETWEEN
    t[form, BETWEEN, CLASS_WS] = BETWEEN
    t[form, BETWEEN, CLASS_AO] = IN_ANSWER
    t[form, IN_ANSWER, [CLASS_WS, CLASS_OTHER]] = IN_ANSWER
    t[form, IN_ANSWER, CLASS_AC] = DONE
    t[form, DONE, CLASS_WS] = DONE
  return t


def build_tables(tokenizer: tok_lib.Tokenizer, config: ml_collections.ConfigDict
                 ) -> tuple[dict[str, Any], Static]:
  """All tables (numpy) and the static facts for `config` and `tokenizer`."""
  tables, num_inner = token_tables(tokenizer, bool(config.concepts.strip_plural_s),
                                   int(config.limits.max_inner_words))
  kw_tables, facts = keyword_tables(config)
  tables.update(kw_tables)
  tables["automaton"] = format_automaton().reshape(-1)
  static = Static(
      vocab_size=tokenizer.vocab_size, num_inner=num_inner,
      think_open_id=tokenizer.think_open_id, think_close_id=tokenizer.think_close_id,
      answer_open_id=tokenizer.answer_open_id, answer_close_id=tokenizer.answer_close_id,
      **facts)
  return tables, static
