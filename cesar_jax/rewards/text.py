"""What a "word" is, for every reward, and how words are hashed (host side, plain Python).

The definition is chosen so that the token-id implementation can be exact for ANY byte-level
tokenizer, whatever its pre-tokenizer:

* A text is a sequence of bytes (UTF-8). Special tokens (`<|im_end|>`, the reasoning tags, ...)
  are not text: each one is a separator.
* ASCII letters are lower-cased (bytes.lower(); nothing else is case-folded).
* A word is a maximal run of bytes in [a-z0-9]; every other byte (punctuation, whitespace, any
  byte of a non-ASCII character) is a separator. So "Café-au-lait x2!" has the words
  "caf", "au", "lait", "x2"; "abc123" is one word even where a tokenizer splits letters from
  digits; a token that holds half of a UTF-8 character holds separators only.
* The light normaliser (`normalize`, on by default) strips one plural "s": a word of at least
  4 bytes ending in "s" but not "ss" loses it ("beeps" -> "beep", "bass" stays). It works on
  the whole word, so on device it is applied to the word's hash (see `strip_s_lanes`).
* Whitespace, for the format check, is the ASCII set b" \\t\\n\\r\\x0b\\x0c".

Words are compared through four polynomial hashes modulo primes below 2**16 ("lanes"), packed
into two 32-bit keys: 64 bits in all. Polynomial hashes combine across tokens
(h(uv) = h(u) * B**len(v) + h(v)), which is what lets the device assemble a word that
straddles tokens. Prime moduli avoid the structured (Thue-Morse) collisions of hashes modulo
2**32; all words the rewards look up (stopwords, keywords, option texts, question concepts) are
checked collision-free when their tables are built, and a chance collision between two other
words has probability about 2**-64 per pair.
"""

from __future__ import annotations

import functools
import re
from typing import Iterable, Sequence

import numpy as np

WORD_RE = re.compile(rb"[a-z0-9]+")
WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789")
WHITESPACE = frozenset(b" \t\n\r\x0b\x0c")
WHITESPACE_STR = " \t\n\r\x0b\x0c"

# Four hash lanes: h = sum_k byte_k * BASE**(n-1-k) mod PRIME (bytes are 48..122, never 0).
PRIMES = np.array([65521, 65519, 65497, 65479], np.uint32)
BASES = np.array([40503, 36563, 50261, 29833], np.uint32)
NUM_LANES = 4
# Inverse of each base modulo its prime (to take the last byte off a hash).
BASE_INV = np.array([pow(int(b), -1, int(p)) for b, p in zip(BASES, PRIMES)], np.uint32)
S_BYTE = ord("s")
# Keys of "no word": every real key has lanes < 2**16 - 14, so 0x7FFFFFFF (lanes 0x7FFF,
# 0xFFFF) never occurs.
NO_KEY = np.int32(0x7FFFFFFF)


def word_bytes(text: str | bytes) -> bytes:
  """UTF-8 bytes of `text` with ASCII letters lower-cased."""
  if isinstance(text, str):
    text = text.encode("utf-8")
  return text.lower()


def words(text: str | bytes) -> list[bytes]:
  """The words of a text (no special tokens in it), in order."""
  return WORD_RE.findall(word_bytes(text))


def strips_s(word: bytes) -> bool:
  """Whether the plural normaliser drops the final "s" of `word`."""
  return len(word) >= 4 and word[-1] == S_BYTE and word[-2] != S_BYTE


def normalize(word: bytes, strip_plural_s: bool = True) -> bytes:
  return word[:-1] if strip_plural_s and strips_s(word) else word


@functools.lru_cache(maxsize=1 << 16)
def lanes(word: bytes) -> tuple[int, ...]:
  """The four hash lanes of a byte string."""
  out = []
  for p, b in zip(PRIMES.tolist(), BASES.tolist()):
    h = 0
    for c in word:
      h = (h * b + c) % p
    out.append(h)
  return tuple(out)


def powers(n: int) -> tuple[int, ...]:
  """BASE**n mod PRIME per lane (what a hash is multiplied by when n bytes are appended)."""
  return tuple(pow(int(b), n, int(p)) for b, p in zip(BASES, PRIMES))


def pack(lane_values: Sequence[int]) -> tuple[int, int]:
  """Four lanes -> two int32 keys (bit patterns of lane0<<16|lane1 and lane2<<16|lane3)."""
  k1 = (lane_values[0] << 16) | lane_values[1]
  k2 = (lane_values[2] << 16) | lane_values[3]
  return tuple(k - (1 << 32) if k >= 1 << 31 else k for k in (k1, k2))


@functools.lru_cache(maxsize=1 << 16)
def key(word: bytes) -> tuple[int, int]:
  """The 64-bit key of a word, as two int32."""
  return pack(lanes(word))


def check_collisions(named_words: Iterable[bytes], what: str) -> None:
  """Raises if two distinct words share a key (the token-id rewards could not tell them apart)."""
  seen: dict[tuple[int, int], bytes] = {}
  for w in named_words:
    k = key(w)
    other = seen.setdefault(k, w)
    if other != w:
      raise ValueError(f"{what}: words {other!r} and {w!r} have the same 64-bit hash key {k}; "
                       "change one of them (or the hash bases in cesar_jax/rewards/text.py)")


def phrase_words(phrase: str, strip_plural_s: bool) -> list[tuple[bytes, ...]]:
  """A keyword phrase -> its segments of normalised words; "..." separates segments.

  "compared to" -> [(b"compared", b"to")]; "if ... then" -> [(b"if",), (b"then",)].
  """
  segments = [tuple(normalize(w, strip_plural_s) for w in words(part))
              for part in phrase.split("...")]
  if any(not s for s in segments):
    raise ValueError(f"keyword phrase {phrase!r}: every part around '...' needs at least one "
                     "word of [a-z0-9]")
  return segments
