"""Rematerialised encoder and decoder layers (AudioLMConfig.remat): same values, same gradients,
and the policy really is in the differentiated program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cesar_jax.models import AudioLM, preset
from cesar_jax.models import remat as remat_lib

B, T, F, MELS, VOCAB = 2, 10, 16, 8, 48
AUDIO_ID = VOCAB - 1
N_AUDIO = 4  # audio tokens of 16 frames


def _config(remat):
  return preset("tiny", num_hidden_layers=2, encoder_layers=2, num_mel_bins=MELS, d_model=16,
                encoder_attention_heads=2, encoder_ffn_dim=32, max_source_positions=F // 2,
                hidden_size=16, intermediate_size=32, num_attention_heads=2,
                num_key_value_heads=1, vocab_size=VOCAB, audio_token_id=AUDIO_ID, remat=remat)


def _inputs():
  rng = np.random.default_rng(0)
  ids = rng.integers(1, AUDIO_ID, size=(B, T)).astype(np.int32)
  ids[:, 2:2 + N_AUDIO] = AUDIO_ID
  mask = np.ones((B, T), np.int32)
  ids[1, :2], mask[1, :2] = 0, 0  # left padding
  feats = rng.normal(size=(B, MELS, F)).astype(np.float32)
  weights = rng.normal(size=(B, T, VOCAB)).astype(np.float32)
  return ids, mask, feats, np.ones((B, F), np.int32), weights


def _loss_and_grad(remat):
  """Loss and gradients (encoder and decoder params) of one model (same init for every policy)."""
  model = AudioLM(_config(remat), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  ids, mask, feats, fmask, weights = _inputs()

  def loss(params):
    logits = nnx.merge(graphdef, params)(ids, feats, fmask, mask)
    return jnp.sum(jnp.tanh(logits) * weights)

  fn = jax.jit(jax.value_and_grad(loss))
  return fn(params), jax.make_jaxpr(jax.grad(loss))(params)


def _count(jaxpr, name: str) -> int:
  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name == name
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          n += _count(inner, name)
  return n


@pytest.fixture(scope="module")
def reference():
  return _loss_and_grad("none")


@pytest.mark.parametrize("policy", ["full", pytest.param("dots", marks=pytest.mark.slow)])
def test_remat_keeps_loss_and_gradients(reference, policy):
  (want_loss, want_grads), want_jaxpr = reference
  (loss, grads), jaxpr = _loss_and_grad(policy)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  leaves, want_leaves = jax.tree.leaves(grads), jax.tree.leaves(want_grads)
  assert len(leaves) == len(want_leaves)
  for got, want in zip(leaves, want_leaves):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  # One checkpointed (`remat2`) layer body per scanned stack (encoder, decoder): the layers run
  # under `jax.lax.scan`, traced once whatever the depth; none without remat.
  assert _count(want_jaxpr.jaxpr, "remat2") == 0
  assert _count(jaxpr.jaxpr, "remat2") == 2
  assert _count(jaxpr.jaxpr, "scan") >= 2


def test_remat_works_for_a_model_read_inside_another_grad():
  """The GRPO reference model: its params come from outside the policy's `jax.grad`."""
  model = AudioLM(_config("full"), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  ids, mask, feats, fmask, weights = _inputs()

  def logits(p):
    return nnx.merge(graphdef, p)(ids, feats, fmask, mask)

  @jax.jit
  def step(p, ref):
    return jax.grad(lambda p: jnp.sum((logits(p) - jax.lax.stop_gradient(logits(ref))) ** 2
                                      * weights))(p)

  ref = jax.tree.map(lambda x: x * 1.01, params)
  grads = step(params, ref)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 0


def test_unknown_policy_is_an_error_naming_the_choices():
  with pytest.raises(ValueError, match=r"'some'.*\['dots', 'full', 'none'\]"):
    _config("some")
  with pytest.raises(ValueError, match="Decoder remat"):
    remat_lib.check_policy("x", "Decoder remat")
