"""The jitted token-id rewards equal the plain-Python reference, over thousands of completions.

Generated completions mix tags (well placed, missing, nested, repeated, misordered), empty think
parts, whitespace, reasoning sentences, option letters and texts, arbitrary unicode, special
tokens, and outputs longer than the token limit (scored truncated). Random token-id sequences
check words that straddle tokens in every way a byte-level tokenizer allows.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tokenizers as hf_tokenizers
from tokenizers import normalizers

from cesar_jax import rewards
from cesar_jax import tokenizers as tok_lib
from cesar_jax.rewards import scan as scan_lib
from cesar_jax.rewards import testing

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
RANGES = {"format": (0, 1), "accuracy": (0, 1), "consistency": (0, 2), "keywords": (0, 3),
          "overthinking": (0, 1)}
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _config():
  config = rewards.default_config("cesar")
  config.overthinking.max_think_tokens = 64  # Traced: no recompile; exercises the clipping.
  return config


piece = st.one_of(
    st.sampled_from(TAGS), st.sampled_from(TAGS), st.sampled_from(TAGS),
    st.sampled_from(["", " ", "\n", "\t\n ", "  "]),
    st.sampled_from(testing.SENTENCES).map(
        lambda s: s.format(f=440, t0=0.5, t1=1.2, bpm=120, letter="B", option="violin", n=3)),
    st.sampled_from(["(A)", "B", "b.", "piano", "Violins", "flute", "a dog barking", "C major",
                     "the answer is", "first", "then", "if", "compared to", "chord progression"]),
    st.from_regex(r"[A-Za-z0-9 .,()'\-]{0,12}", fullmatch=True),
    st.text(max_size=8),  # Arbitrary unicode, combining marks, emoji, control characters.
    st.sampled_from(["<|im_end|>", "<|endoftext|>", "<|AUDIO|>", "<thi", "nk>", "</answer"]),
)
completion = st.lists(piece, max_size=24).map("".join)


def _small_config():
  """The config of the small-tokenizer tests: no plural normaliser, concepts of 3+ bytes."""
  config = _config()
  config.concepts.strip_plural_s = False
  config.concepts.min_word_length = 3
  return config


def _examples(seed, n):
  rng = np.random.default_rng(seed)
  out = [testing.example(rng, i) for i in range(n)]
  for i, ex in enumerate(out):
    if i % 7 == 3:
      ex["think_budget"] = 0  # Answer-only form.
  return out


def _check(tokenizer, scorer, same, texts, examples, config, min_well_formed=0.0):
  """Truncates each text to the scorer's token limit and compares both implementations."""
  ids = [x[:scorer.tokens] for x in tokenizer.encode_batch(texts)]
  decoded = tokenizer.decode_batch(ids)
  ours = scorer.ids(tokenizer, ids, examples, config)
  ref = rewards.reference.score_texts(decoded, examples, config, tokenizer)
  same(ours, ref, decoded)
  for k, (lo, hi) in RANGES.items():
    assert np.all((ref[k] >= lo) & (ref[k] <= hi)), (k, ref[k])
  assert np.all(np.isfinite(ref["total"]))
  assert np.mean(ref["format"]) >= min_well_formed, np.mean(ref["format"])
  return ref


@SETTINGS
@given(texts=st.lists(completion, min_size=1, max_size=64), seed=st.integers(0, 1000))
def test_generated_completions(builtin_tok, scorer, same, texts, seed):
  _check(builtin_tok, scorer, same, texts, _examples(seed, len(texts)), _config())


def test_thousands_of_completions(builtin_tok, scorer, same):
  rng = np.random.default_rng(0)
  examples = _examples(1, 2048)
  texts = [testing.completion(rng, ex, testing.KINDS[i % len(testing.KINDS)],
                              num_sentences=int(rng.integers(0, 14)))
           for i, ex in enumerate(examples)]
  ref = _check(builtin_tok, scorer, same, texts, examples, _config(), min_well_formed=0.2)
  # The set is varied: every component takes several values.
  for k in RANGES:
    assert len(np.unique(ref[k])) >= 2, k


def test_other_tokenizer_and_options(small_tok, scorer, same):
  """A small BPE where most words straddle tokens; no plural normaliser; min length 3."""
  config = _small_config()
  rng = np.random.default_rng(3)
  examples = _examples(4, 256)
  texts = [testing.completion(rng, ex, testing.KINDS[i % 5], num_sentences=int(rng.integers(12)))
           for i, ex in enumerate(examples)]
  _check(small_tok, scorer, same, texts, examples, config, min_well_formed=0.2)


@SETTINGS
@given(data=st.data())
def test_random_token_ids(small_tok, scorer, same, data):
  """Arbitrary id sequences: partial UTF-8 characters, words split anywhere, stray tags."""
  tok = small_tok
  tags = [tok.think_open_id, tok.think_close_id, tok.answer_open_id, tok.answer_close_id]
  n = data.draw(st.integers(1, 64))
  ids, examples = [], _examples(data.draw(st.integers(0, 100)), n)
  for _ in range(n):
    body = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=60))
    # Mostly well placed tags around random content, sometimes not.
    k = data.draw(st.integers(0, len(body)))
    if data.draw(st.booleans()):
      body = [tags[0]] + body[:k] + [tags[1], tags[2]] + body[k:k + 5] + [tags[3]]
    ids.append(body[:scorer.tokens])
  decoded = tok.decode_batch(ids)
  # Text spelling a special token out of ordinary tokens would parse differently: skip it.
  specials = [t.content for t in tok.backend.get_added_tokens_decoder().values()]
  assume(all(text.count(s) == list(x).count(tok.backend.token_to_id(s))
             for text, x in zip(decoded, ids) for s in specials))
  config = _small_config()
  ours = scorer.ids(tok, ids, examples, config)
  ref = rewards.reference.score_texts(decoded, examples, config, tok)
  # |t| counts the ids between the tags (the reference re-encodes, which may merge them).
  for i, x in enumerate(ids):
    if ref["format"][i] and tags[0] in x:
      think = x.index(tags[1]) - x.index(tags[0]) - 1
      ref["overthinking"][i] = np.clip(np.float32(1) - np.float32(think) / np.float32(64), 0, 1)
  ref.pop("total")
  ours.pop("total")
  same(ours, ref, decoded)


def test_inner_words_and_messy_rows(inner_tok, scorer, same, monkeypatch):
  """Tokens holding complete inner words ("a.b.c"), and the exact recount of rows whose
  concepts share a sort prefix: with 3 prefix bits most rows are "messy"; a batch with few
  concept-bearing rows takes the per-row path, a full one the whole-batch path."""
  config = _config()
  config.test_marker = 1  # A separate compile: this one has 3-bit prefixes.
  fn = rewards.api.cached_build(config, inner_tok)
  assert fn.static.num_inner >= 2, "the fixture should give tokens with inner words"
  monkeypatch.setattr(scan_lib, "PREFIX_BITS", scan_lib.slot_bits(
      scorer.tokens * (1 + fn.static.num_inner)) + 3)
  rng = np.random.default_rng(5)
  examples = _examples(6, 64)
  for ex in examples:
    ex.pop("think_budget", None)
  texts = [f"<think>{testing.think(rng, ex, int(rng.integers(1, 10)))} a.b.c e.g. 3.5dB; k=v,w"
           f"</think><answer>{testing.answer_text(rng, ex)}</answer>" for ex in examples]
  ref = _check(inner_tok, scorer, same, texts, examples, config)  # Most rows messy: all rows.
  assert np.all(ref["format"] == 1) and np.mean(ref["consistency"] > 0) > 0.5
  texts = [t if i < 6 else "<answer>x</answer>" for i, t in enumerate(texts)]
  ref = _check(inner_tok, scorer, same, texts, examples, config)  # Few rows: per-row recount.
  assert np.any(ref["consistency"][:6] > 0)


def test_normalizer_nfc(small_tok, scorer, same):
  """With an NFC normaliser (as Qwen's), "cafe" + combining acute is the word "caf"."""
  hf = hf_tokenizers.Tokenizer.from_str(small_tok.backend.to_str())
  hf.normalizer = normalizers.NFC()
  tok = tok_lib.Tokenizer(hf)
  ex = {"question": "What is the caf?", "choices": ["caf", "tea"], "answer": "caf"}
  texts = ["<think>cafe\u0301</think><answer>caf</answer>",
           "<think>cafe</think><answer>caf</answer>"]
  ours, ref = scorer.texts(tok, texts, [ex, ex], _small_config())
  same(ours, ref, texts)
  # C(t) = {caf}: Sim(t, y) = 1, Sim(t, Q) = 1 / |{caf, tea}|; then C(t) = {cafe}: 0.
  np.testing.assert_array_equal(ref["consistency"], [1.5, 0.0])


@pytest.mark.parametrize("weights", [(0.1, 0.7, 1.3, 0.37, 1.0)])
def test_inexact_weights_differ_by_at_most_one_ulp(builtin_tok, scorer, weights):
  config = _config()
  for name, w in zip(config.weights.keys(), weights):
    config.weights[name] = w
  rng = np.random.default_rng(7)
  examples = _examples(8, 128)
  texts = [testing.completion(rng, ex, testing.KINDS[i % 5]) for i, ex in enumerate(examples)]
  ours, ref = scorer.texts(builtin_tok, texts, examples, config)
  for k in RANGES:
    np.testing.assert_array_equal(ours[k], ref[k])
  # XLA may fuse a multiply-add in the total: one rounding instead of two.
  np.testing.assert_allclose(ours["total"], ref["total"], rtol=2 ** -22, atol=0)
