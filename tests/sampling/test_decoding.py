"""Decoding controls: hand-computed filters, parity with transformers' logits warpers, no recompiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cesar_jax.sampling import decoding

# Probabilities 0.5, 0.3, 0.15, 0.05.
_PROBS = np.array([0.5, 0.3, 0.15, 0.05], np.float32)
_LOGITS = np.log(_PROBS)


def _kept(logits: jax.Array) -> np.ndarray:
  return np.isfinite(np.asarray(logits))


def test_filter_hand_values():
  logits = np.stack([_LOGITS[[2, 0, 3, 1]]] * 5)  # Shuffled so ranks differ from positions.
  top_p = np.array([1.0, 0.7, 0.5, 0.81, 1.0], np.float32)
  top_k = np.array([0, 0, 0, 3, 2], np.int32)
  kept = _kept(decoding.filter_logits(jnp.asarray(logits), top_p, top_k))
  # Positions hold probs [0.15, 0.5, 0.05, 0.3].
  np.testing.assert_array_equal(kept, [
      [1, 1, 1, 1],  # no filter
      [0, 1, 0, 1],  # p=0.7: 0.5 (mass above 0) and 0.3 (mass above 0.5 < 0.7)
      [0, 1, 0, 0],  # p=0.5: mass above 0.3 is 0.5, not < 0.5
      [0, 1, 0, 1],  # k=3 renormalises by 0.95; p=0.81: mass above the 3rd = 0.842 >= 0.81
      [0, 1, 0, 1],  # k=2
  ])
  # Row 3 again with p=0.85 keeps the third (0.8/0.95 = 0.842 < 0.85).
  kept = _kept(decoding.filter_logits(jnp.asarray(logits[:1]), np.array([0.85], np.float32),
                                      np.array([3], np.int32)))
  np.testing.assert_array_equal(kept, [[1, 1, 0, 1]])


def test_filter_matches_transformers_warpers():
  torch = pytest.importorskip("torch")
  from transformers.generation import logits_process as lp  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 50)).astype(np.float32) * 3
  for top_k, top_p in [(0, 0.9), (5, 1.0), (10, 0.6), (1, 0.3), (0, 0.2), (49, 0.95)]:
    ref = torch.from_numpy(logits.copy())
    if top_k > 0:
      ref = lp.TopKLogitsWarper(top_k)(None, ref)
    if top_p < 1:
      ref = lp.TopPLogitsWarper(top_p)(None, ref)
    ours = decoding.filter_logits(jnp.asarray(logits), np.full(6, top_p, np.float32),
                                  np.full(6, top_k, np.int32))
    np.testing.assert_array_equal(_kept(ours), np.isfinite(ref.numpy()), err_msg=f"{top_k=} {top_p=}")


def test_sampled_frequencies_follow_the_truncated_distribution():
  n = 20000
  logits = jnp.tile(jnp.asarray(_LOGITS), (n, 1))
  params = decoding.SamplingParams.create(n, temperature=1.0, top_p=0.7)
  tokens = np.asarray(decoding.sample_tokens(jax.random.key(0), logits, params))
  freq = np.bincount(tokens, minlength=4) / n
  np.testing.assert_allclose(freq, [0.625, 0.375, 0, 0], atol=0.015)
  # Temperature 2 without filters: p ~ sqrt(probs).
  params = decoding.SamplingParams.create(n, temperature=2.0)
  tokens = np.asarray(decoding.sample_tokens(jax.random.key(1), logits, params))
  expected = np.sqrt(_PROBS) / np.sqrt(_PROBS).sum()
  np.testing.assert_allclose(np.bincount(tokens, minlength=4) / n, expected, atol=0.015)


def test_greedy_and_top_k_one_rows_take_the_argmax_in_a_mixed_batch():
  logits = jax.random.normal(jax.random.key(3), (8, 100))
  params = decoding.SamplingParams.create(
      8, temperature=np.array([0, 1, 0, 1, 0.5, 0, 1, 1], np.float32),
      top_k=np.array([0, 1, 0, 1, 1, 0, 0, 0], np.int32))
  tokens = np.asarray(decoding.sample_tokens(jax.random.key(4), logits, params))
  argmax = np.asarray(jnp.argmax(logits, -1))
  np.testing.assert_array_equal(tokens[:6], argmax[:6])


def test_token_log_probs_use_the_tempered_full_distribution():
  logits = jnp.asarray(np.stack([_LOGITS, _LOGITS]))
  tokens = jnp.array([1, 3])
  logp = decoding.token_log_probs(logits, tokens, jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(logp, np.log([0.3, 0.05]), rtol=1e-5)
  logp = decoding.token_log_probs(logits[:1], tokens[:1], jnp.array([2.0]))
  np.testing.assert_allclose(logp, np.log(np.sqrt(0.3) / np.sqrt(_PROBS).sum()), rtol=1e-5)


def test_changing_controls_does_not_recompile():
  fn = jax.jit(decoding.sample_tokens)
  logits = jax.random.normal(jax.random.key(0), (4, 32))
  for t, p, k in [(1.0, 1.0, 0), (0.0, 0.5, 3), (0.7, 0.9, 10)]:
    fn(jax.random.key(1), logits, decoding.SamplingParams.create(4, temperature=t, top_p=p, top_k=k))
  assert fn._cache_size() == 1  # pylint: disable=protected-access


def test_bad_controls_are_named():
  with pytest.raises(ValueError, match="top_p"):
    decoding.SamplingParams.create(2, top_p=0.0)
  with pytest.raises(ValueError, match="temperature"):
    decoding.SamplingParams.create(2, temperature=-1.0)
  with pytest.raises(ValueError, match=r"shape \[2\]"):
    decoding.SamplingParams.create(2, top_k=np.array([1, 2, 3]))
