"""The Omni thinker's audio encoder on padded batches: static shapes, padding, token counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cesar_jax.data import pipeline
from cesar_jax.models import audio_encoder, audio_tokens, config
from cesar_jax.models.omni_audio_encoder import OmniAudioEncoder, compact_valid_frames

MELS, NW = 8, 3  # chunks of 6 frames
CFG = config.AudioEncoderConfig(num_mel_bins=MELS, d_model=16, encoder_layers=1,
                                encoder_attention_heads=2, encoder_ffn_dim=24,
                                max_source_positions=10, n_window=NW)


@pytest.fixture(scope="module")
def encoder():
  return _random_encoder()


def _random_encoder():
  graphdef, state = nnx.split(nnx.eval_shape(lambda: OmniAudioEncoder(CFG, 12, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(0)
  return nnx.merge(graphdef, jax.tree.map(
      lambda x: jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype), state))


@pytest.fixture(scope="module")
def forward():
  counter = {"n": 0}

  @nnx.jit
  def f(enc, feats, mask):
    counter["n"] += 1  # runs once per trace
    return enc(feats, mask)
  return f, counter


def _clips(lengths, width, seed=0, pad_value=-0.7):
  rng = np.random.default_rng(seed)
  feats = rng.normal(size=(len(lengths), MELS, width)).astype(np.float32)
  mask = (np.arange(width)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
  return np.where(mask[:, None, :] > 0, feats, pad_value).astype(np.float32), mask


def test_token_counts_follow_transformers():
  from transformers.models.qwen2_5_omni import processing_qwen2_5_omni as proc
  frames = np.arange(0, 3001)
  want = np.asarray(proc._get_feat_extract_output_lengths(frames))  # pylint: disable=protected-access
  np.testing.assert_array_equal(audio_tokens.qwen2_5_omni(frames), want)
  np.testing.assert_array_equal(config.preset("tiny_omni").num_audio_tokens(frames), want)
  np.testing.assert_array_equal(audio_encoder.num_audio_tokens(frames), audio_tokens.qwen2_audio(frames))
  assert audio_tokens.for_arch("qwen2_5_omni") is audio_tokens.qwen2_5_omni
  assert pipeline.num_audio_tokens(3000) == audio_tokens.qwen2_5_omni(3000) == 750
  with pytest.raises(ValueError, match="no audio token rule for arch='x'"):
    audio_tokens.for_arch("x")


def test_output_shape_and_valid_rows_do_not_depend_on_the_padding(encoder, forward):
  f, counter = forward
  lengths = [17, 6, 1]  # inside a chunk, exactly one chunk, one frame
  feats, mask = _clips(lengths, 20)
  out = np.asarray(f(encoder, feats, mask))
  assert out.shape == (3, 4 * NW // 2, 12)  # ceil(20 / 6) = 4 chunks of 3 positions, pooled
  n_tok = audio_tokens.qwen2_5_omni(np.asarray(lengths))
  # Wider padding (more chunks) and other padding values: the same valid rows.
  wide, wmask = _clips(lengths, 31, pad_value=3.0)
  wide[:, :, :20] = feats[:, :, :20]
  out_wide = np.asarray(f(encoder, wide, wmask))
  for i, n in enumerate(n_tok):
    np.testing.assert_allclose(out_wide[i, :n], out[i, :n], atol=1e-6)
  # New values at the same shapes: no retrace.
  before = counter["n"]
  f(encoder, *_clips([5, 12, 20], 20, seed=1))
  assert counter["n"] == before


def test_chunks_are_independent_until_pooling(encoder, forward):
  # Changing frames of chunk 2 (frames 12..17) leaves the pooled tokens of chunks 0-1 alone:
  # tokens 0..2 pool positions 0..5, i.e. chunks 0 and 1 (3 positions per chunk).
  feats, mask = _clips([18, 2, 9], 20)
  other = feats.copy()
  other[:, :, 12:18] += 5.0
  f, _ = forward
  a, b = np.asarray(f(encoder, feats, mask)), np.asarray(f(encoder, other, mask))
  np.testing.assert_allclose(a[0, :3], b[0, :3], atol=1e-6)
  assert np.abs(a[0, 3:5] - b[0, 3:5]).max() > 1e-3


def test_compact_moves_valid_frames_first():
  feats = jnp.arange(12, dtype=jnp.float32).reshape(1, 2, 6)
  mask = jnp.array([[0, 1, 1, 0, 1, 0]])
  out, lengths = compact_valid_frames(feats, mask)
  np.testing.assert_array_equal(out[0], [[1, 2, 4, 0, 0, 0], [7, 8, 10, 0, 0, 0]])
  assert int(lengths[0]) == 3


def test_gradients_are_finite_with_empty_chunks(encoder):
  feats, mask = _clips([4, 0], 20)  # clip 0 has 3 empty chunks, clip 1 has no frames at all
  graphdef, params = nnx.split(encoder)

  def loss(p):
    out = nnx.merge(graphdef, p)(feats, mask)
    return jnp.sum(out[0, :1] ** 2)
  grads = jax.jit(jax.grad(loss))(params)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


def test_errors_name_the_problem(encoder):
  with pytest.raises(ValueError, match="has 4 mel bins, the config expects num_mel_bins=8"):
    encoder(jnp.zeros((1, 4, 6)), jnp.ones((1, 6)))
  with pytest.raises(ValueError, match=r"feature_attention_mask has shape \(1, 5\)"):
    encoder(jnp.zeros((1, MELS, 6)), jnp.ones((1, 5)))
  with pytest.raises(ValueError, match="n_window=11 exceeds max_source_positions=10"):
    OmniAudioEncoder(config.AudioEncoderConfig(n_window=11, max_source_positions=10), 4,
                     rngs=nnx.Rngs(0))


def test_pipeline_takes_the_architecture_rule():
  """`TokenizePrompt(audio_tokens_fn=...)`: placeholders from the model's rule, picklable for
  grain worker processes."""
  import pickle  # pylint: disable=g-import-not-at-top
  from cesar_jax import tokenizers  # pylint: disable=g-import-not-at-top
  calls = []
  tok = tokenizers.Tokenizer.builtin()
  example = {"question": "Q?", "choices": ["a", "b"], "feature_mask": np.ones(37, np.int32)}
  op = pipeline.TokenizePrompt(tok, 512, audio_tokens_fn=audio_tokens.qwen2_5_omni)
  out = pickle.loads(pickle.dumps(op)).map(dict(example))
  assert out["num_audio_tokens"] == 9 == list(out["prompt_ids"]).count(tok.audio_id)
  op = pipeline.TokenizePrompt(tok, 512, audio_tokens_fn=lambda n: calls.append(n) or 2)
  assert op.map(dict(example))["num_audio_tokens"] == 2 and calls == [37]
