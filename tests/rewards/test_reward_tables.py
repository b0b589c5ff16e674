"""Words, hashing and the lookup tables built from the tokenizer and the config (host side)."""

import jax.numpy as jnp
import numpy as np
import pytest

from cesar_jax import rewards
from cesar_jax.rewards import concepts
from cesar_jax.rewards import scan as scan_lib
from cesar_jax.rewards import tables as tbl
from cesar_jax.rewards import text


def test_words_and_normaliser():
  assert text.words("Café-au-lait x2! ABC123def, 3.5 dB") == [
      b"caf", b"au", b"lait", b"x2", b"abc123def", b"3", b"5", b"db"]
  assert text.words("日本語 🎵") == []
  assert [text.normalize(w) for w in (b"beeps", b"bass", b"bus", b"s", b"chords", b"its")] == [
      b"beep", b"bass", b"bus", b"s", b"chord", b"its"]
  assert text.normalize(b"beeps", strip_plural_s=False) == b"beeps"
  assert text.phrase_words("If ... then", True) == [(b"if",), (b"then",)]
  assert text.phrase_words("Chord progressions", True) == [(b"chord", b"progression")]
  with pytest.raises(ValueError, match="'...'"):
    text.phrase_words("if ... ...", True)


def test_hash_combines_across_tokens():
  """h(uv) = h(u) * B**len(v) + h(v) per lane: what the scan relies on."""
  for u, v in ((b"pi", b"ano"), (b"", b"abc"), (b"x", b""), (b"1234", b"5678")):
    want = text.lanes(u + v)
    got = tuple((a * p + b) % int(m) for a, p, b, m in zip(
        text.lanes(u), text.powers(len(v)), text.lanes(v), text.PRIMES))
    assert got == want
  assert text.key(b"piano") != text.key(b"pianos")


def test_device_plural_strip_matches_host():
  for word in (b"beeps", b"chords", b"abcs"):
    lanes = [jnp.asarray([x], jnp.uint32) for x in text.lanes(word)]
    stripped = scan_lib._strip_s(lanes, jnp.asarray([True]))
    assert tuple(int(x[0]) for x in stripped) == text.lanes(word[:-1])


def test_collisions_are_reported(monkeypatch):
  text.check_collisions([b"a", b"b", b"a"], "ok")  # Duplicates of one word are fine.
  monkeypatch.setattr(text, "key", lambda w: (1, 2))
  with pytest.raises(ValueError, match=r"b'a'.*b'b'.*same 64-bit"):
    text.check_collisions([b"a", b"b"], "test words")


def test_token_table_matches_the_word_definition(small_tok, inner_tok):
  """Every token's entry, decoded, equals what text.py says of its bytes."""
  for tok in (small_tok, inner_tok):
    cols, num_inner = tbl.token_tables(tok, True, 7)
    meta = cols["meta"]
    for i in range(tok.vocab_size):
      b = tok.token_bytes(i).lower()
      runs = text.WORD_RE.findall(b)
      all_word = bool(b) and all(ch in text.WORD_BYTES for ch in b)
      field = lambda shift, width=1: (int(meta[i]) >> shift) & ((1 << width) - 1)
      assert field(tbl.HAS_SEP) == int(not all_word), (i, b)
      lead = len(b) - len(b.lstrip(bytes(text.WORD_BYTES)))
      trail = 0 if all_word else len(b) - len(b.rstrip(bytes(text.WORD_BYTES)))
      assert field(tbl.LEAD_LEN_SHIFT, 8) == lead, (i, b)
      assert field(tbl.TRAIL_LEN_SHIFT, 8) == trail, (i, b)
      if not all_word:  # Runs that touch neither end are complete inner words.
        assert field(tbl.N_INNER_SHIFT, 3) == len(runs) - (lead > 0) - (trail > 0), (i, b)
      packed = int(np.uint32(cols["lead01"][i]))
      assert (packed >> 16, packed & 0xFFFF) == text.lanes(b[:lead])[:2], (i, b)
      is_ws = bool(b) and all(c in text.WHITESPACE for c in b)
      assert field(tbl.IS_WS) == int(is_ws), (i, b)
    assert (int(meta[tok.think_open_id]) >> tbl.CLASS_SHIFT) & 7 == tbl.CLASS_TO
  assert num_inner >= 2  # inner_tok has tokens like "a.b.c".


def test_inner_word_limit_names_the_token(inner_tok):
  config = rewards.default_config()
  config.limits.max_inner_words = 1
  with pytest.raises(ValueError, match=r"token \d+ \(b'.*'\) holds \d complete words"):
    rewards.build(config, inner_tok)


def test_displacement_hash_is_injective():
  keys = np.random.default_rng(0).integers(-2**31, 2**31 - 1, 500, dtype=np.int64)
  mult_f, m_bits, mult_g, g_bits, disp, slots = tbl.displacement_hash(keys, "test")
  f = tbl.slot_of(keys, mult_f, m_bits).astype(np.int64)
  g = tbl.slot_of(keys, mult_g, g_bits).astype(np.int64)
  np.testing.assert_array_equal((f + disp[g]) % (1 << m_bits), slots)
  assert len(np.unique(slots)) == len(keys) and (1 << m_bits) <= 4 * len(keys)


def test_format_automaton():
  t = tbl.format_automaton()
  c = {"ws": tbl.CLASS_WS, "x": tbl.CLASS_OTHER, "to": tbl.CLASS_TO, "tc": tbl.CLASS_TC,
       "ao": tbl.CLASS_AO, "ac": tbl.CLASS_AC, "pad": tbl.CLASS_PAD}

  def run(form, seq):
    s = tbl.START
    for k in seq.split():
      s = t[form, s, c[k]]
    return s
  assert run(0, "ws to x ws tc ws ao x ac ws pad pad") == tbl.DONE
  assert run(0, "to tc ao ac") == tbl.DONE
  assert run(0, "x to tc ao ac") == tbl.FAILED
  assert run(0, "to to tc ao ac") == tbl.FAILED
  assert run(0, "to tc ao ac ao") == tbl.FAILED
  assert run(0, "to tc ao x") == tbl.IN_ANSWER
  assert run(1, "ws ao x ac ws") == tbl.DONE
  assert run(1, "to tc ao ac") == tbl.FAILED


def test_config_errors(builtin_tok):
  config = rewards.default_config()
  config.keywords.logic.phrases = (("if ... then ... else", 1.0),)
  with pytest.raises(ValueError, match="at most one '...' gap"):
    rewards.build(config, builtin_tok)
  config = rewards.default_config()
  config.keywords.domain.phrases = (("a very long domain phrase", 1.0),)
  with pytest.raises(ValueError, match="max_phrase_words"):
    rewards.build(config, builtin_tok)
  config = rewards.default_config()
  config.weights.nope = 1.0
  with pytest.raises(KeyError, match="nope"):
    rewards.build(config, builtin_tok)


@pytest.mark.parametrize("width", [1, 2, 3, 37, 256])
def test_bitonic_sort_equals_numpy_sort(width):
  """The concept sort: any width (padded to a power of two), duplicates, extremes."""
  rng = np.random.default_rng(width)
  x = rng.integers(-5, 6, [width, 33]).astype(np.int32)  # Many duplicates.
  x[rng.random(x.shape) < 0.2] = np.iinfo(np.int32).max
  x[rng.random(x.shape) < 0.1] = np.iinfo(np.int32).min
  got = np.asarray(concepts.bitonic_sort(jnp.asarray(x)))
  np.testing.assert_array_equal(got, np.sort(x, axis=0))
