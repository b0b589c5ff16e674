"""AudioLM (arch qwen2_5_omni) vs transformers Qwen2_5OmniThinkerForConditionalGeneration.

Same logits on random tiny thinkers, with transformers computing its own M-RoPE positions
(`get_rope_index`, no position_ids passed), and our 1D positions equal to `get_rope_index`.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import hf_fixtures as F
from cesar_jax.checkpoints import hf
from cesar_jax.models import decoder

torch = pytest.importorskip("torch")

TOL = 1e-4

# GQA (4 query heads on 2 kv heads) with chunks of 8 frames; MHA with chunks of 6 frames, other
# widths (head_dim 12, mrope [2, 2, 2]) and clips longer than 2 * max_source_positions frames,
# the Qwen2-Audio window of this size: the Omni encoder has no such limit.
SPECS = {
    "gqa_window4": F.OmniSpec(),
    "mha_window3_long": F.OmniSpec(n_window=3, num_key_value_heads=4, hidden_size=48,
                                   encoder_attention_heads=3, max_source_positions=10,
                                   feature_frames=37, rms_norm_eps=1e-5),
}
T = 40  # every batch is left-padded to T tokens: one compiled forward per model


@pytest.fixture(scope="module", params=sorted(SPECS))
def pair(request, tmp_path_factory):
  spec = SPECS[request.param]
  path, hf_model = F.build_hf_checkpoint(tmp_path_factory.mktemp(request.param), spec, seed=1)
  return spec, hf_model, hf.load(path)


def _max_diff(a, b, mask):
  m = mask.astype(bool)
  return float(np.abs(a[m] - b[m]).max())


def _two_clips(spec, seed=3, text_lengths=(4, 11)):
  # Clip 0 fills every frame, clip 1 ends inside a chunk (19 = 2 * 8 + 3 or 3 * 6 + 1 frames);
  # neither length is a multiple of the chunk. Different text lengths: both rows left-padded.
  return F.make_batch(spec, feature_lengths=[spec.feature_frames, 19],
                      text_lengths=list(text_lengths), seed=seed, total_length=T)


def test_two_clips_left_padded_with_transformers_positions(pair):
  spec, hf_model, model = pair
  batch = _two_clips(spec)
  assert batch["attention_mask"][:, 0].sum() == 0  # both rows really are left-padded
  assert spec.feature_frames % (2 * spec.n_window) and 19 % (2 * spec.n_window)
  assert model.config.arch == "qwen2_5_omni"
  ours = F.jax_forward(model, batch)
  ref = F.hf_forward(hf_model, batch, with_positions=False)  # HF's own get_rope_index
  assert ours.dtype == np.float32 and ours.shape == ref.shape
  assert _max_diff(ours, ref, batch["attention_mask"]) <= TOL
  assert np.abs(ref).max() > 0.5  # the comparison is not between tiny numbers


def _with_audio_markers(batch, spec):
  """The processor's layout: <|audio_bos|> <|AUDIO|> * n <|audio_eos|>, no other special id."""
  cfg = spec.hf_config()
  ids = batch["input_ids"].copy()
  ids[(ids >= spec.vocab_size - 7) & (ids != spec.audio_token_id)] = 1
  for row in ids:
    audio = np.flatnonzero(row == spec.audio_token_id)
    row[audio[0] - 1], row[audio[-1] + 1] = cfg.audio_start_token_id, cfg.audio_end_token_id
  return dict(batch, input_ids=ids)


def test_positions_equal_get_rope_index(pair):
  spec, hf_model, _ = pair
  batch = _with_audio_markers(_two_clips(spec, seed=4), spec)
  ids, mask = (torch.from_numpy(batch[k]) for k in ("input_ids", "attention_mask"))
  lengths = torch.from_numpy(batch["feature_attention_mask"].sum(-1))
  pos, deltas = hf_model.model.get_rope_index(ids, attention_mask=mask, audio_seqlens=lengths)
  pos, deltas = pos.numpy(), deltas.numpy()
  assert pos.shape == (3,) + batch["input_ids"].shape
  np.testing.assert_array_equal(pos[0], pos[1])  # three equal rows: M-RoPE is 1D RoPE
  np.testing.assert_array_equal(pos[0], pos[2])
  ours = np.asarray(decoder.positions_from_mask(jnp.asarray(batch["attention_mask"])))
  m = batch["attention_mask"].astype(bool)
  np.testing.assert_array_equal(ours[m], pos[0][m])
  np.testing.assert_array_equal(deltas, 0)  # decode positions continue from the prompt's
  # Through the vision branch (what a processor with images would take), audio and text
  # positions are still one running count.
  pos_v, _ = hf_model.model.get_rope_index(ids, attention_mask=mask, audio_seqlens=lengths,
                                           image_grid_thw=torch.zeros((0, 3), dtype=torch.long))
  np.testing.assert_array_equal(pos_v.numpy()[0][m], ours[m])


def test_feature_mask_with_a_hole_selects_frames_like_transformers(pair):
  spec, hf_model, model = pair
  batch = _two_clips(spec, seed=5)
  fmask = batch["feature_attention_mask"].copy()
  fmask[0, 3:7] = 0  # HF keeps the masked-in frames, wherever they are
  batch = dict(batch, feature_attention_mask=fmask)
  n_audio = F.audio_tokens(int(fmask[0].sum()))
  ids = batch["input_ids"].copy()
  row = np.flatnonzero(ids[0] == spec.audio_token_id)
  ids[0, row[n_audio:]] = 1  # fewer placeholders for the shorter clip
  batch["input_ids"] = ids
  ref = F.hf_forward(hf_model, batch, with_positions=False)
  assert _max_diff(F.jax_forward(model, batch), ref, batch["attention_mask"]) <= TOL


def test_text_only_rows(pair):
  spec, hf_model, model = pair
  batch = F.make_batch(spec, feature_lengths=[8, 8], text_lengths=[13, 40], seed=5,
                       with_audio=False, total_length=T)
  batch = {k: batch[k] for k in ("input_ids", "attention_mask")}
  assert _max_diff(F.jax_forward(model, batch), F.hf_forward(hf_model, batch, with_positions=False),
                   batch["attention_mask"]) <= TOL

# Prefill + KV-cache decode: tests/sampling/test_omni_generate_parity.py (greedy tokens equal
# transformers' thinker `generate`).
