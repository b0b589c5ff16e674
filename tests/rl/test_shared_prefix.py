"""Shared-prefix groups: a group's prompt runs once and its G completions attend to it.

`train_step.completion_hidden` (the GRPO update's, the reference's and the SFT step's forward)
goes through `Decoder.shared_prefix`; it must give the values AND the gradients of the plain
forward of [prompt; completion] repeated per row, which is what transformers computes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cesar_jax import model_store
from cesar_jax.models import preset
from cesar_jax.models.audio_lm import splice_audio
from cesar_jax.rl import grpo
from cesar_jax.rl import train_step

B, G, P, M, F, MELS, VOCAB = 2, 3, 9, 5, 16, 8, 64
AUDIO_ID = VOCAB - 1


def _model(remat="none"):
  cfg = preset("tiny", num_hidden_layers=2, encoder_layers=1, num_mel_bins=MELS, d_model=16,
               encoder_attention_heads=2, encoder_ffn_dim=32, max_source_positions=F // 2,
               hidden_size=32, intermediate_size=48, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=VOCAB, audio_token_id=AUDIO_ID, remat=remat)
  return model_store.init_model(cfg, 0)


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, AUDIO_ID, size=(B, P)).astype(np.int32)
  ids[:, 3:7] = AUDIO_ID  # 4 audio tokens for 16 frames
  mask = np.ones((B, P), np.int32)
  ids[1, :3], mask[1, :3] = 0, 0  # left padding
  lengths = np.array([5, 1, 3, 4, 2, 5])  # ragged completions, right-padded
  cmask = (np.arange(M)[None] < lengths[:, None]).astype(np.int32)
  comps = np.where(cmask > 0, rng.integers(1, AUDIO_ID, size=(B * G, M)), 0).astype(np.int32)
  feats = rng.normal(size=(B, MELS, F)).astype(np.float32)
  return ids, mask, feats, np.ones((B, F), np.int32), comps, cmask


def _repeated_hidden(model, ids, mask, feats, fmask, comps, cmask):
  """The plain forward: each row's [prompt; completion] on its own (HF's semantics)."""
  lm = model.language_model
  audio, lengths = model.encode_audio(feats, fmask)
  prompt = splice_audio(lm.embed(ids), ids == AUDIO_ID, audio, lengths)
  embeds = jnp.concatenate([jnp.repeat(prompt, G, 0), lm.embed(comps)], axis=1)
  full_mask = jnp.concatenate([jnp.repeat(mask, G, 0), cmask], axis=1)
  return lm(embeds, full_mask)[:, P - 1:-1]


def _shared_hidden(model, *inputs):
  return train_step.completion_hidden(model, *inputs[:4], inputs[4], inputs[5], G)


@pytest.mark.parametrize("remat", ["none", "full"])
def test_shared_prefix_equals_the_repeated_forward_values_and_gradients(remat):
  model = _model(remat)
  graphdef, params = nnx.split(model)
  inputs = _inputs()
  comps, cmask = inputs[4], inputs[5]

  def loss(params, forward):
    m = nnx.merge(graphdef, params)
    hidden = forward(m, *inputs)
    logp = grpo.token_log_probs(m.language_model.logits(hidden), comps)
    return jnp.sum(jnp.where(cmask > 0, logp, 0.0)), hidden

  (want, want_h), want_g = jax.jit(jax.value_and_grad(
      lambda p: loss(p, _repeated_hidden), has_aux=True))(params)
  (got, got_h), got_g = jax.jit(jax.value_and_grad(
      lambda p: loss(p, _shared_hidden), has_aux=True))(params)
  valid = cmask > 0
  np.testing.assert_allclose(np.asarray(got_h)[valid], np.asarray(want_h)[valid], atol=2e-5)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
  flat_w, flat_g = jax.tree.leaves(want_g), jax.tree.leaves(got_g)
  assert len(flat_w) == len(flat_g)
  for a, b in zip(flat_w, flat_g):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


def test_shared_prefix_checks_the_group():
  model = _model()
  ids, mask, feats, fmask, comps, cmask = _inputs()
  lm = model.language_model
  with pytest.raises(ValueError, match="are not 2 prefixes x group 2"):
    lm.shared_prefix(lm.embed(ids), mask, lm.embed(comps), cmask, 2)
