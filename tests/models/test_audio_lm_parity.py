"""AudioLM vs transformers Qwen2AudioForConditionalGeneration: same logits on random tiny models."""

import jax.numpy as jnp
import numpy as np
import pytest

import hf_fixtures as F
from cesar_jax.checkpoints import hf
from cesar_jax.models import audio_lm

TOL = 1e-4

# Two models cover the axes: MHA vs GQA (4 query heads on 1 kv head), an untied head vs a
# config asking for tied embeddings (transformers' Qwen2-Audio still keeps a separate
# lm_head, so it loads untied; a truly tied model is checked in tests/checkpoints/test_hf.py),
# other RoPE theta / RMSNorm eps / encoder head counts. Each costs one jit compile.
SPECS = {
    "mha_untied": F.HFSpec(),
    "gqa_tied_config": F.HFSpec(num_key_value_heads=1, tie_word_embeddings=True, rope_theta=500.0,
                                hidden_size=48, encoder_attention_heads=3, rms_norm_eps=1e-5),
}


@pytest.fixture(scope="module", params=sorted(SPECS))
def pair(request, tmp_path_factory):
  spec = SPECS[request.param]
  path, hf_model = F.build_hf_checkpoint(tmp_path_factory.mktemp(request.param), spec, seed=1)
  return spec, hf_model, hf.load(path)


T = 32  # every batch is left-padded to T tokens: one compiled forward per model


def _max_diff(a, b, mask):
  m = mask.astype(bool)
  return float(np.abs(a[m] - b[m]).max())


def test_batch_of_two_clips_left_padded(pair):
  spec, hf_model, model = pair
  # Different clip lengths (full window and a partial one) and different text lengths.
  batch = F.make_batch(spec, feature_lengths=[spec.feature_frames, 29], text_lengths=[4, 11],
                       seed=3, total_length=T)
  assert batch["attention_mask"][:, 0].sum() == 0  # both rows really are left-padded
  ours, ref = F.jax_forward(model, batch), F.hf_forward(hf_model, batch)
  assert ours.dtype == np.float32 and ours.shape == ref.shape
  assert _max_diff(ours, ref, batch["attention_mask"]) <= TOL
  assert np.abs(ref).max() > 0.5  # the comparison is not between tiny numbers


def test_hf_default_positions(pair):
  spec, hf_model, model = pair
  # HF's forward without position_ids numbers every row 0..T-1, padding included; ours matches
  # when given the same positions (and by default when nothing is padded).
  batch = F.make_batch(spec, feature_lengths=[40, 20], text_lengths=[3, 8], seed=6, total_length=T)
  arange = np.broadcast_to(np.arange(T), batch["input_ids"].shape)
  ours = F.jax_forward(model, batch, positions=arange)
  ref = F.hf_forward(hf_model, batch, with_positions=False)
  assert _max_diff(ours, ref, batch["attention_mask"]) <= TOL


def test_text_only_rows(pair):
  spec, hf_model, model = pair
  batch = F.make_batch(spec, feature_lengths=[8, 8], text_lengths=[13, 32], seed=5,
                       with_audio=False, total_length=T)
  batch = {k: batch[k] for k in ("input_ids", "attention_mask")}
  assert _max_diff(F.jax_forward(model, batch), F.hf_forward(hf_model, batch),
                   batch["attention_mask"]) <= TOL


def test_splice_audio_hand_example():
  text = jnp.zeros((2, 5, 1))
  is_audio = jnp.array([[0, 1, 1, 0, 0], [1, 1, 1, 0, 1]], bool)
  # Clip 0 has 2 valid tokens (10, 11), clip 1 has 3 (20, 21, 22) + padding 99.
  audio = jnp.array([[10, 11, 99], [20, 21, 22]], jnp.float32)[..., None]
  out = audio_lm.splice_audio(text, is_audio, audio, jnp.array([2, 3]))
  # Row-major order like HF masked_scatter: row 1's 4th placeholder gets nothing (left as is).
  np.testing.assert_array_equal(out[..., 0], [[0, 10, 11, 0, 0], [20, 21, 22, 0, 0]])


def test_placeholder_mismatch_names_both_numbers(pair):
  spec, _, model = pair
  batch = F.make_batch(spec, feature_lengths=[spec.feature_frames, 29], text_lengths=[4, 6], seed=7)
  ids = batch["input_ids"].copy()
  ids[0, np.flatnonzero(ids[0] == spec.audio_token_id)[0]] = 1  # drop one placeholder
  expected = F.audio_tokens(spec.feature_frames) + F.audio_tokens(29)
  with pytest.raises(ValueError, match=f"hold {expected - 1} <\\|AUDIO\\|> tokens.* give {expected} audio"):
    model(jnp.asarray(ids), jnp.asarray(batch["input_features"]),
          jnp.asarray(batch["feature_attention_mask"]), jnp.asarray(batch["attention_mask"]))
  with pytest.raises(ValueError, match=f"hold {expected - 1} .* give {expected} audio tokens"):
    audio_lm.check_audio_placeholders(ids, batch["feature_attention_mask"], spec.audio_token_id)
  audio_lm.check_audio_placeholders(batch["input_ids"], batch["feature_attention_mask"],
                                    spec.audio_token_id)  # the good batch passes
