"""Examples on the host: the correct option, the expected form, and their fixed-shape arrays.

`encode_examples` runs once per prompt, in numpy, and gives the arrays the jitted reward reads.
For G samples per prompt either repeat the arrays (`repeat(arrays, G)`: row i*G + g belongs to
prompt i) or keep one row per prompt and add `"sample_to_example": int32[B]` (the prompt row of
each completion); the reward gathers rows when that entry is present.
"""

from __future__ import annotations

import string
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

from cesar_jax.rewards import text

OPTION_LETTERS = string.ascii_lowercase.encode()


def example_id(example: Mapping[str, Any], index: int) -> str:
  return str(example.get("id", f"#{index}"))


def answer_index(example: Mapping[str, Any], index: int = 0) -> int:
  """Index of the correct option: `answer` is the option text (MMAU style) or an int index."""
  for k in ("question", "choices", "answer"):
    if k not in example:
      raise KeyError(f"reward example {example_id(example, index)} has no {k!r} key")
  choices, answer = list(example["choices"]), example["answer"]
  if not choices:
    raise ValueError(f"reward example {example_id(example, index)}: empty 'choices'")
  if isinstance(answer, (int, np.integer)) and not isinstance(answer, bool):
    if not 0 <= answer < len(choices):
      raise ValueError(f"reward example {example_id(example, index)}: answer index {answer} "
                       f"outside the {len(choices)} choices")
    return int(answer)
  if answer in choices:
    return choices.index(answer)
  folded = [str(c).strip().casefold() for c in choices]
  if str(answer).strip().casefold() in folded:
    return folded.index(str(answer).strip().casefold())
  raise ValueError(f"reward example {example_id(example, index)}: answer {answer!r} is not one "
                   f"of its choices {choices!r}")


def answer_only(example: Mapping[str, Any], config: ml_collections.ConfigDict) -> bool:
  """Whether the answer-only form is expected: think_budget == 0, else config.format.answer_only."""
  budget = example.get("think_budget")
  if budget is None:
    return bool(config.format.answer_only)
  return int(budget) == 0


def stopword_set(config: ml_collections.ConfigDict) -> frozenset[bytes]:
  """Normalised stopwords (a word is a stopword when its normalised form is in this set)."""
  strip = bool(config.concepts.strip_plural_s)
  entries = tuple(config.concepts.stopwords) + tuple(config.concepts.extra_stopwords)
  return frozenset(text.normalize(w, strip) for s in entries for w in text.words(s))


def concepts(word_list: Sequence[bytes], config: ml_collections.ConfigDict,
             stopwords: frozenset[bytes]) -> set[bytes]:
  """C(x): normalised words, minus stopwords and words under min_word_length bytes."""
  strip = bool(config.concepts.strip_plural_s)
  min_len = int(config.concepts.min_word_length)
  out = set()
  for w in word_list:
    n = text.normalize(w, strip)
    if len(w) >= min_len and n not in stopwords:
      out.add(n)
  return out


def question_words(example: Mapping[str, Any]) -> list[bytes]:
  """Words of Q = the question plus its options (option letters are not part of Q)."""
  out = text.words(str(example["question"]))
  for c in example["choices"]:
    out += text.words(str(c))
  return out


def option_patterns(choices: Sequence[str], strip_plural_s: bool
                    ) -> list[list[tuple[bytes, ...]]]:
  """Normalised word sequences that name option i: [letter], [option words], [letter] +
  option words. An option without [a-z0-9] words is named by its letter only.
  """
  out = []
  for i, c in enumerate(choices):
    letter = (OPTION_LETTERS[i:i + 1],)
    w = tuple(text.normalize(x, strip_plural_s) for x in text.words(str(c)))
    out.append([letter, w, letter + w] if w else [letter])
  return out


def repeat(arrays: Mapping[str, np.ndarray], num_samples: int) -> dict[str, np.ndarray]:
  """Rows of each prompt repeated num_samples times (row i*G + g is prompt i)."""
  return {k: np.repeat(v, num_samples, axis=0) for k, v in arrays.items()}


# Per-example cuckoo table of C(Q): a concept sits at slot h1 or h2 (both computed on device).
CUCKOO_M1, CUCKOO_M2 = 0x9E3779B1, 0x85EBCA77


def cuckoo_slots(k1: np.ndarray, k2: np.ndarray, salt: int, bits: int):
  """Slots h1, h2 of int32 keys (numpy twin of the device code in concepts.py)."""
  mask = np.uint64(0xFFFFFFFF)
  u1 = (np.asarray(k1).astype(np.int64).astype(np.uint64) ^ np.uint64(salt)) & mask
  u2 = (np.asarray(k2).astype(np.int64).astype(np.uint64) ^ np.uint64(salt)) & mask
  shift = np.uint64(32 - bits)
  return (((u1 * np.uint64(CUCKOO_M1)) & mask) >> shift).astype(np.int64), (
      ((u2 * np.uint64(CUCKOO_M2)) & mask) >> shift).astype(np.int64)


def cuckoo_table(keys: Sequence[tuple[int, int]], infos: Sequence[int], bits: int, name: str):
  """(salt, k1[H], k2[H], info[H]) holding every key at one of its two slots."""
  size = 1 << bits
  k1s = np.array([k[0] for k in keys], np.int32)
  k2s = np.array([k[1] for k in keys], np.int32)
  for attempt in range(64):
    salt = (attempt * 0x6F4F2A35 + 0x1234567) & 0x7FFFFFFF
    h1, h2 = cuckoo_slots(k1s, k2s, salt, bits)
    table = np.full([size], -1, np.int64)
    ok = True
    for item in range(len(keys)):
      cur, slot = item, h1[item]
      for _ in range(4 * len(keys) + 8):
        cur, table[slot] = table[slot], cur
        if cur < 0:
          break
        slot = h2[cur] if slot == h1[cur] else h1[cur]
      else:
        ok = False
        break
    if ok:
      k1 = np.full([size], text.NO_KEY, np.int32)
      k2 = np.full([size], text.NO_KEY, np.int32)
      info = np.zeros([size], np.int32)
      used = table >= 0
      k1[used], k2[used] = k1s[table[used]], k2s[table[used]]
      info[used] = np.asarray(infos, np.int32)[table[used]]
      return salt, k1, k2, info
  raise ValueError(f"{name}: could not build the concept table of {len(keys)} concepts")


def encode_examples(examples: Sequence[Mapping[str, Any]], config: ml_collections.ConfigDict,
                    ) -> dict[str, np.ndarray]:
  """Fixed-shape arrays of E examples (no tokenizer needed: everything is on words).

  Returns (NO = limits.max_options, K = limits.max_option_words + 1, H = question table size,
  keys are int32 pairs as in text.key):
    answer_index: int32[E]        correct option.
    answer_only: bool[E]          expected form (no think part).
    pattern_keys: int32[E, NO, 3, K, 2], pattern_len: int32[E, NO, 3] (0 = unused): the word
                  sequences that name each option (letter / text / both), REVERSED (last word
                  first), as the device walks the answer backwards.
    option_concepts_len: int32[E, NO]: |C(option)|.
    question_concepts_len: int32[E]: |C(Q)|, Q = question + options.
    question_salt: int32[E], question_k1/k2/info: int32[E, H]: C(Q) as a cuckoo table; info
                  bit 0 = present, bit 1 + o = the concept is in C(option o) (C(option) is a
                  subset of C(Q)).
  """
  lim = config.limits
  n_opt, k_words, n_qc = int(lim.max_options), int(lim.max_option_words) + 1, int(
      lim.max_question_concepts)
  if n_opt > 28:
    raise ValueError(f"limits.max_options={n_opt}: at most 28 (option bit masks are int32)")
  bits = question_table_bits(config)
  e = len(examples)
  stop = stopword_set(config)
  no_key = int(text.NO_KEY)
  out = {
      "answer_index": np.zeros([e], np.int32),
      "answer_only": np.zeros([e], bool),
      "pattern_keys": np.full([e, n_opt, 3, k_words, 2], no_key, np.int32),
      "pattern_len": np.zeros([e, n_opt, 3], np.int32),
      "option_concepts_len": np.zeros([e, n_opt], np.int32),
      "question_concepts_len": np.zeros([e], np.int32),
      "question_salt": np.zeros([e], np.int32),
      "question_k1": np.zeros([e, 1 << bits], np.int32),
      "question_k2": np.zeros([e, 1 << bits], np.int32),
      "question_info": np.zeros([e, 1 << bits], np.int32),
  }
  for i, ex in enumerate(examples):
    name = example_id(ex, i)
    out["answer_index"][i] = answer_index(ex, i)
    out["answer_only"][i] = answer_only(ex, config)
    choices = [str(c) for c in ex["choices"]]
    if len(choices) > n_opt:
      raise ValueError(f"reward example {name}: {len(choices)} choices > limits.max_options="
                       f"{n_opt}")
    for o, pats in enumerate(option_patterns(choices, bool(config.concepts.strip_plural_s))):
      n_words = len(text.words(choices[o]))
      if n_words + 1 > k_words:
        raise ValueError(f"reward example {name}: option {o} has {n_words} words > "
                         f"limits.max_option_words={k_words - 1}")
      for p, seq in enumerate(pats):
        text.check_collisions(seq, f"reward example {name} option {o}")
        out["pattern_len"][i, o, p] = len(seq)
        for j, w in enumerate(reversed(seq)):
          out["pattern_keys"][i, o, p, j] = text.key(w)
    option_sets = [concepts(text.words(c), config, stop) for c in choices]
    for o, c in enumerate(option_sets):
      out["option_concepts_len"][i, o] = len(c)
    q_concepts = sorted(concepts(question_words(ex), config, stop))
    if len(q_concepts) > n_qc:
      raise ValueError(f"reward example {name}: {len(q_concepts)} question concepts > "
                       f"limits.max_question_concepts={n_qc}")
    text.check_collisions(q_concepts, f"reward example {name} question concepts")
    out["question_concepts_len"][i] = len(q_concepts)
    infos = [1 | sum(1 << (o + 1) for o, c in enumerate(option_sets) if w in c)
             for w in q_concepts]
    salt, k1, k2, info = cuckoo_table([text.key(w) for w in q_concepts], infos, bits,
                                      f"reward example {name}")
    out["question_salt"][i] = salt
    out["question_k1"][i], out["question_k2"][i], out["question_info"][i] = k1, k2, info
  return out


def question_table_bits(config: ml_collections.ConfigDict) -> int:
  """log2 of the per-example question table size (load <= 1/4 keeps cuckoo insertion easy)."""
  return max(4, int(np.ceil(np.log2(4 * int(config.limits.max_question_concepts)))))
