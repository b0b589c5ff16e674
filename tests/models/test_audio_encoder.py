"""Audio encoder: token counts, parity with transformers' Qwen2AudioEncoder, masking, windows."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hf_fixtures as F
from cesar_jax.checkpoints import hf
from cesar_jax.models import audio_encoder

SPEC = F.HFSpec(encoder_attention_heads=3)
_encode = nnx.jit(lambda enc, feats, fmask: enc(feats, fmask))


def test_num_audio_tokens_hand_values():
  # 30 s at 100 frames/s -> 1500 after the stride-2 conv -> 750 after pooling (Qwen2-Audio).
  lengths = jnp.array([3000, 48, 29, 7, 3, 1, 0])
  np.testing.assert_array_equal(audio_encoder.conv_output_lengths(lengths), [1500, 24, 15, 4, 2, 1, 0])
  np.testing.assert_array_equal(audio_encoder.num_audio_tokens(lengths), [750, 12, 7, 2, 1, 0, 0])
  assert [F.audio_tokens(int(l)) for l in lengths] == [750, 12, 7, 2, 1, 0, 0]


def test_sinusoids_match_whisper():
  table = np.asarray(audio_encoder.sinusoids(5, 8))
  inv = np.exp(-np.log(10000.0) / 3 * np.arange(4))
  expected = np.concatenate([np.sin(np.arange(5)[:, None] * inv), np.cos(np.arange(5)[:, None] * inv)], 1)
  np.testing.assert_allclose(table, expected, rtol=1e-5, atol=1e-6)


def test_matches_transformers_encoder(tmp_path):
  import torch
  path, hf_model = F.build_hf_checkpoint(tmp_path, SPEC, seed=2)
  encoder = hf.load(path).audio_tower
  batch = F.make_batch(SPEC, feature_lengths=[SPEC.feature_frames, 17], text_lengths=[2, 2], seed=1)
  feats, fmask = batch["input_features"], batch["feature_attention_mask"]
  ours = np.asarray(_encode(encoder, jnp.asarray(feats), jnp.asarray(fmask)))
  # HF's mask: keys at or past each clip's conv length get a large negative bias.
  s = SPEC.feature_frames // 2
  keys_ok = np.arange(s)[None, :] < ((fmask.sum(-1) - 1) // 2 + 1)[:, None]
  bias = np.where(keys_ok, 0.0, np.finfo(np.float32).min)[:, None, None, :].repeat(s, axis=2)
  with torch.no_grad():
    ref = hf_model.model.audio_tower(torch.from_numpy(feats), attention_mask=torch.from_numpy(
        bias.astype(np.float32))).last_hidden_state.numpy()
  assert ours.shape == ref.shape == (2, SPEC.feature_frames // 4, SPEC.d_model)
  np.testing.assert_allclose(ours, ref, atol=1e-4)


@pytest.fixture(scope="module")
def encoder():
  return F.random_model(F.jax_config(SPEC), seed=3).audio_tower


def test_frames_past_the_length_are_ignored(encoder):
  """Valid audio tokens of a clip of L frames depend on frames < L + 2 only (conv reach)."""
  length, f = 22, SPEC.feature_frames
  rng = np.random.default_rng(0)
  feats = np.repeat(rng.standard_normal((1, SPEC.num_mel_bins, f)).astype(np.float32), 2, 0)
  feats[1, :, length + 2:] = rng.standard_normal((SPEC.num_mel_bins, f - length - 2))
  fmask = np.repeat((np.arange(f) < length)[None].astype(np.int32), 2, 0)
  out = np.asarray(_encode(encoder, jnp.asarray(feats), jnp.asarray(fmask)))
  n = F.audio_tokens(length)
  np.testing.assert_allclose(out[0, :n], out[1, :n], atol=1e-5)
  assert np.abs(out[0, n:] - out[1, n:]).max() > 1e-3  # padding outputs did change


def test_short_window_equals_full_window(encoder):
  """Fewer frames than 2 * max_source_positions (our extension) give HF's valid tokens."""
  length, short = 21, 24
  rng = np.random.default_rng(1)
  feats = np.zeros((1, SPEC.num_mel_bins, SPEC.feature_frames), np.float32)
  feats[..., :length] = rng.standard_normal((1, SPEC.num_mel_bins, length))
  fmask = (np.arange(SPEC.feature_frames) < length)[None].astype(np.int32)
  full = np.asarray(_encode(encoder, jnp.asarray(feats), jnp.asarray(fmask)))
  part = np.asarray(_encode(encoder, jnp.asarray(feats[..., :short]), jnp.asarray(fmask[:, :short])))
  n = F.audio_tokens(length)
  assert part.shape[1] == short // 4 >= n
  np.testing.assert_allclose(part[:, :n], full[:, :n], atol=1e-5)


def test_bad_feature_shapes_are_errors(encoder):
  with pytest.raises(ValueError, match="has 7 mel bins.*num_mel_bins=16"):
    encoder(jnp.zeros((1, 7, 8)), jnp.ones((1, 8)))
  with pytest.raises(ValueError, match="has 9 frames"):
    encoder(jnp.zeros((1, 16, 9)), jnp.ones((1, 9)))
  with pytest.raises(ValueError, match=f"has {SPEC.feature_frames + 2} frames.*<= 2 \\* max_source_positions = {SPEC.feature_frames}"):
    encoder(jnp.zeros((1, 16, SPEC.feature_frames + 2)), jnp.ones((1, SPEC.feature_frames + 2)))


@pytest.mark.parametrize("platform", ["cpu", "tpu"])
def test_dense_matches_nnx_linear_on_either_path(monkeypatch, platform):
  """`Dense` flattens the tokens to 2-D on CPU only; values and gradients are nnx.Linear's."""
  import jax  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(audio_encoder, "target_platform", lambda: platform)
  kw = dict(use_bias=True, rngs=nnx.Rngs(0))
  dense = audio_encoder.dense(7, 5, ("embed", "mlp"), dtype=jnp.float32,
                              param_dtype=jnp.float32, **kw)
  linear = nnx.Linear(7, 5, **kw)
  nnx.update(linear, nnx.state(dense))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 7)), jnp.float32)

  def loss(module, x):
    return jnp.sum(jnp.sin(module(x)))

  values = [nnx.value_and_grad(loss, argnums=(0, 1))(m, x) for m in (dense, linear)]
  (v_dense, (g_dense, gx_dense)), (v_linear, (g_linear, gx_linear)) = values
  np.testing.assert_allclose(v_dense, v_linear, rtol=1e-6)
  np.testing.assert_allclose(gx_dense, gx_linear, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(g_dense["kernel"][...], g_linear["kernel"][...], rtol=1e-6,
                             atol=1e-7)
  jaxpr = str(jax.make_jaxpr(lambda x: dense(x))(x))
  dot_out = "f32[6,5] = dot_general" if platform == "cpu" else "f32[2,3,5] = dot_general"
  assert dot_out in jaxpr, jaxpr
