"""Qwen2 decoder pieces and the KV cache: prefill + decode steps == one full forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hf_fixtures as F
from cesar_jax.models import decoder

TOL = 1e-4
SPEC = F.HFSpec(num_key_value_heads=2)
PROMPT, STEPS, CACHE = 24, 5, 32


def test_positions_from_mask_hand_values():
  mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(decoder.positions_from_mask(mask), [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])
  np.testing.assert_array_equal(decoder.positions_from_mask(jnp.array([[1, 0, 1]]), jnp.array([7])),
                                [[7, 0, 8]])


def test_rms_norm_hand_value():
  norm = decoder.RMSNorm(2, eps=0.0)
  norm.scale[...] = jnp.array([1.0, 2.0])
  # rms([3, 4]) = sqrt(12.5)
  np.testing.assert_allclose(norm(jnp.array([3.0, 4.0])), [3 / 12.5**0.5, 8 / 12.5**0.5], rtol=1e-6)


def test_rope_is_relative():
  """<rope(q, m), rope(k, n)> depends only on m - n; position 0 is the identity."""
  q, k = jnp.asarray(np.random.default_rng(0).standard_normal((2, 1, 1, 1, 8)), jnp.float32)

  @jax.jit
  def rot(x, p):
    cos, sin = decoder.rope_tables(jnp.array([[p]]), 8, 100.0, jnp.float32)
    return decoder.apply_rope(x, cos, sin)
  np.testing.assert_allclose(rot(q, 0), q, rtol=1e-6)
  a = jnp.sum(rot(q, 5) * rot(k, 2))
  b = jnp.sum(rot(q, 13) * rot(k, 10))
  c = jnp.sum(rot(q, 4) * rot(k, 2))
  np.testing.assert_allclose(a, b, rtol=1e-5)
  assert abs(float(a - c)) > 1e-3


@pytest.fixture(scope="module")
def setup():
  model = F.random_model(F.jax_config(SPEC), seed=1)
  prompt = F.make_batch(SPEC, feature_lengths=[SPEC.feature_frames, 23], text_lengths=[3, 9],
                        seed=2, total_length=PROMPT)
  cont = np.random.default_rng(3).integers(0, SPEC.audio_token_id, size=(2, STEPS))
  full = dict(prompt, input_ids=np.concatenate([prompt["input_ids"], cont], 1),
              attention_mask=np.concatenate([prompt["attention_mask"], np.ones_like(cont)], 1))
  return model, prompt, cont, F.jax_forward(model, full)


@nnx.jit
def _prefill(model, ids, mask, feats, fmask):
  cache = model.init_cache(ids.shape[0], CACHE)
  return model.prefill(ids, mask, cache, feats, fmask, all_logits=True)


def _decode_loop(graphdef, state, cache, tokens):
  """Teacher-forced decode steps inside lax.while_loop, as a sampler would run them."""
  def body(carry):
    i, cache, out = carry
    logits, cache = nnx.merge(graphdef, state).decode_step(tokens[:, i], cache)
    return i + 1, cache, out.at[i].set(logits)
  out = jnp.zeros((tokens.shape[1], tokens.shape[0], SPEC.vocab_size), jnp.float32)
  _, cache, out = jax.lax.while_loop(lambda c: c[0] < tokens.shape[1], body, (0, cache, out))
  return out, cache


def test_prefill_then_decode_matches_full_forward(setup):
  model, prompt, cont, full_logits = setup
  j = {k: jnp.asarray(v) for k, v in prompt.items()}
  logits, cache = _prefill(model, j["input_ids"], j["attention_mask"], j["input_features"],
                           j["feature_attention_mask"])
  m = prompt["attention_mask"].astype(bool)
  np.testing.assert_allclose(np.asarray(logits)[m], full_logits[:, :PROMPT][m], atol=TOL)
  assert int(cache.index) == PROMPT
  np.testing.assert_array_equal(cache.next_position, m.sum(1))
  graphdef, state = nnx.split(model)
  loop = jax.jit(_decode_loop, static_argnums=0, donate_argnums=2)
  steps, cache = loop(graphdef, state, cache, jnp.asarray(cont))
  steps = np.asarray(steps).transpose(1, 0, 2)  # [B, STEPS, V]
  np.testing.assert_allclose(steps, full_logits[:, PROMPT:], atol=TOL)
  assert np.abs(full_logits).max() > 0.5
  assert int(cache.index) == PROMPT + STEPS
  np.testing.assert_array_equal(cache.mask[:, PROMPT:PROMPT + STEPS], True)
  np.testing.assert_array_equal(cache.mask[:, PROMPT + STEPS:], False)


def test_invalid_step_is_invisible(setup):
  """A step with valid=False leaves no trace: the next step's logits are as if it never ran."""
  model, prompt, cont, _ = setup
  j = {k: jnp.asarray(v) for k, v in prompt.items()}
  _, cache = _prefill(model, j["input_ids"], j["attention_mask"], j["input_features"],
                      j["feature_attention_mask"])
  step = nnx.jit(lambda m, t, c, v: m.decode_step(t, c, v))
  tok_a, tok_b = jnp.asarray(cont[:, 0]), jnp.asarray(cont[:, 1])
  both = jnp.array([True, True])
  _, skipped = step(model, tok_a, cache, jnp.array([True, False]))  # row 1 skips tok_a
  with_skip, _ = step(model, tok_b, skipped, both)
  direct, _ = step(model, tok_b, cache, both)
  np.testing.assert_allclose(with_skip[1], direct[1], atol=TOL)
  assert np.abs(np.asarray(with_skip[0] - direct[0])).max() > 1e-3  # row 0 did see tok_a


def test_init_cache_shapes():
  cfg = F.jax_config(SPEC).text
  cache = decoder.init_cache(cfg, batch_size=3, max_length=7, dtype=jnp.bfloat16)
  assert cache.k.shape == cache.v.shape == (
      cfg.num_hidden_layers, 3, cfg.num_key_value_heads, 7, cfg.kv_head_dim)  # head-major
  assert cache.k.dtype == jnp.bfloat16 and cache.mask.shape == (3, 7)
  assert int(cache.index) == 0


def test_prefill_longer_than_cache_is_an_error():
  model = F.random_model(F.jax_config(SPEC))
  cache = model.init_cache(1, 4)
  with pytest.raises(ValueError, match="prompt length 6 exceeds the cache length 4"):
    model.language_model.prefill(jnp.zeros((1, 6, SPEC.hidden_size)), jnp.ones((1, 6)), cache)


def test_shared_prefix_cache_decodes_as_the_repeated_cache(setup):
  """G rows reading one prompt cache (`share_prefix`) give the logits of the prompt cache
  repeated G times, row by row, with left padding, GQA and a skipped step; the prompt's
  keys are held once per group."""
  model, prompt, _, _ = setup
  group, steps = 3, 4
  j = {k: jnp.asarray(v) for k, v in prompt.items()}
  feats = (j["input_features"], j["feature_attention_mask"])
  tokens = jnp.asarray(np.random.default_rng(5).integers(
      0, SPEC.audio_token_id, size=(2 * group, steps)))
  valid = np.ones((2 * group, steps), bool)
  valid[4, 1] = False  # one row skips a step (a finished row's slot stays masked)
  step = nnx.jit(lambda m, t, c, v: m.decode_step(t, c, v))

  def run(cache):
    out = []
    for i in range(steps):
      logits, cache = step(model, tokens[:, i], cache, jnp.asarray(valid[:, i]))
      out.append(np.asarray(logits))
    return np.stack(out, 1), cache

  _, plain = _prefill(model, j["input_ids"], j["attention_mask"], *feats)
  rows = lambda x, axis=0: jnp.repeat(x, group, axis=axis)  # noqa: E731
  plain = plain.replace(k=rows(plain.k, 1), v=rows(plain.v, 1), mask=rows(plain.mask),
                        next_position=rows(plain.next_position))
  expected, _ = run(plain)

  prompt_cache = nnx.jit(lambda m, ids, mask, f, fm: m.prefill(
      ids, mask, m.init_cache(ids.shape[0], PROMPT), f, fm)[1])(
          model, j["input_ids"], j["attention_mask"], *feats)
  shared = decoder.share_prefix(prompt_cache, group, steps)
  assert shared.prefix.k.shape[1::2] == (2, PROMPT)  # [L, B, H_kv, P, D]: once per prompt
  assert shared.k.shape[1::2] == (2 * group, steps)
  got, cache = run(shared)
  np.testing.assert_allclose(got, expected, atol=TOL)
  assert np.abs(expected).max() > 0.5
  np.testing.assert_array_equal(cache.mask, valid)
  np.testing.assert_array_equal(cache.next_position,
                                np.repeat(prompt["attention_mask"].sum(1), group) + valid.sum(1))
  with pytest.raises(ValueError, match="already has a shared prefix"):
    decoder.share_prefix(shared, group, steps)
