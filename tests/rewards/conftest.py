"""Fixtures of the reward tests: tokenizers of three kinds and a fixed-shape scorer.

Compiles are the slow part of these tests (seconds each), so the jitted path is always called
on a few fixed shapes ([64, 256] by default) through `Scorer`.
"""

from __future__ import annotations

import numpy as np
import pytest
import tokenizers as hf_tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from cesar_jax import rewards
from cesar_jax import tokenizers as tok_lib
from cesar_jax.rewards import api
from cesar_jax.rewards import testing


@pytest.fixture(scope="session")
def builtin_tok() -> tok_lib.Tokenizer:
  return tok_lib.Tokenizer.builtin()


@pytest.fixture(scope="session")
def small_tok() -> tok_lib.Tokenizer:
  """A small BPE (many words straddle tokens), trained on the testing corpus."""
  return tok_lib.train_tokenizer(testing.corpus(200, seed=1), 320)


@pytest.fixture(scope="session")
def inner_tok() -> tok_lib.Tokenizer:
  """Whitespace-only pre-tokenizer: tokens like "a.b.c" hold complete inner words."""
  tok = hf_tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(hf_tokenizers.Regex(r"\s+"), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  corpus = ["a.b.c x-y-z 3.5dB; k=v,w (b) e.g. i.e. u.s.a. 1.2.3 beep,beep.", "ok"] * 50
  corpus += list(testing.corpus(60, seed=2))
  tok.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
      vocab_size=700, special_tokens=list(tok_lib.SPECIAL_TOKENS),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
  return tok_lib.Tokenizer(tok)


class Scorer:
  """Scores with both implementations; the jitted one on fixed [rows, tokens] shapes."""

  def __init__(self, rows: int = 64, tokens: int = 256):
    self.rows, self.tokens = rows, tokens

  def ids(self, tokenizer, ids_list, examples, config, lengths=None):
    """Jitted scores of token-id lists (each at most `tokens` long)."""
    fn = api.cached_build(config, tokenizer)
    n = len(ids_list)
    out = {k: [] for k in list(config.weights.keys()) + ["total"]}
    for start in range(0, n, self.rows):
      chunk = ids_list[start:start + self.rows]
      ids, lens = api.pad_ids(chunk, tokenizer.pad_id, self.tokens, rows=self.rows)
      assert ids.shape == (self.rows, self.tokens), ids.shape
      if lengths is not None:
        lens[:len(chunk)] = lengths[start:start + self.rows]
      arrays = rewards.encode_examples(examples[start:start + self.rows], tokenizer, config)
      pad = self.rows - len(chunk)
      arrays = {k: np.concatenate([v, np.repeat(v[:1], pad, axis=0)]) for k, v in arrays.items()}
      # Python components score the decoded ids (as the trainer does).
      _, values = rewards.host_values(config, tokenizer.decode_batch(
          [list(x[:k]) for x, k in zip(chunk, lens)]),
                                      examples[start:start + self.rows], tokenizer=tokenizer)
      values = np.concatenate([values, np.zeros([pad, values.shape[1]], np.float32)])
      res = rewards.apply(fn, ids, lens, arrays, values)
      for k in out:
        out[k].append(np.asarray(res[k])[:len(chunk)])
    return {k: np.concatenate(v) for k, v in out.items()}

  def texts(self, tokenizer, texts, examples, config):
    """(jitted, reference) scores of completion texts, cut at the token limit as generation
    would (the reference then scores the decoded cut text)."""
    ids_list = tokenizer.encode_batch(list(texts))
    cut = [len(x) > self.tokens for x in ids_list]
    ids_list = [x[:self.tokens] for x in ids_list]
    texts = [tokenizer.decode(x) if c else t for x, c, t in zip(ids_list, cut, texts)]
    return (self.ids(tokenizer, ids_list, examples, config),
            rewards.reference.score_texts(texts, examples, config, tokenizer))


@pytest.fixture(scope="session")
def scorer() -> Scorer:
  return Scorer()


def assert_same(ours, ref, texts=None):
  for k in ref:
    bad = np.nonzero(ours[k] != ref[k])[0]
    if len(bad):
      i = bad[0]
      where = f" text {texts[i]!r}" if texts is not None else ""
      raise AssertionError(f"{k}: jitted {ours[k][i]!r} != reference {ref[k][i]!r} at {i} "
                           f"({len(bad)} rows differ){where}")


@pytest.fixture(scope="session")
def same():
  return assert_same
