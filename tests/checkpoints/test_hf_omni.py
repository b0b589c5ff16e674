"""HF checkpoints of the Qwen2.5-Omni thinker <-> AudioLM: both layouts load, save round-trips."""

import json

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

import hf_fixtures as F
from cesar_jax.checkpoints import hf

SPEC = F.OmniSpec()
T = 40


def _batch():
  return F.make_batch(SPEC, feature_lengths=[SPEC.feature_frames, 21], text_lengths=[5, 8],
                      seed=11, total_length=T)


def _flat(model):
  return {name: np.asarray(v) for name, v in hf.flat_parameters(model).items()}


def _assert_same_logits(model, hf_model, batch):
  m = batch["attention_mask"].astype(bool)
  ours, ref = F.jax_forward(model, batch), F.hf_forward(hf_model, batch, with_positions=False)
  np.testing.assert_allclose(ours[m], ref[m], atol=1e-4)
  assert np.abs(ref).max() > 0.5


def test_key_table_hand_examples():
  arch = "qwen2_5_omni"
  assert hf.hf_to_nnx("model.layers.3.self_attn.k_proj.bias", arch) == (
      "language_model.layers.3.self_attn.k_proj.bias", "none")
  assert hf.hf_to_nnx("audio_tower.proj.weight", arch) == ("audio_tower.proj.kernel", "linear")
  assert hf.hf_to_nnx("audio_tower.ln_post.weight", arch) == ("audio_tower.ln_post.scale", "none")
  assert hf.hf_to_nnx("audio_tower.layers.0.self_attn.k_proj.bias", arch) is None  # no such bias
  # The full release's prefix and transformers 5 in-memory names.
  assert hf.hf_to_nnx("thinker.lm_head.weight", arch) == ("language_model.lm_head.kernel", "linear")
  assert hf.hf_to_nnx("thinker.model.norm.weight", arch) == ("language_model.norm.scale", "none")
  assert hf.hf_to_nnx("model.language_model.norm.weight", arch) == ("language_model.norm.scale", "none")
  assert hf.hf_to_nnx("model.audio_tower.conv1.weight", arch) == ("audio_tower.conv1.kernel", "conv")
  assert hf.is_ignored("talker.model.layers.0.mlp.up_proj.weight", arch)
  assert hf.is_ignored("token2wav.code2wav_dit_model.x", arch)
  assert hf.is_ignored("thinker.visual.blocks.0.attn.qkv.weight", arch)
  assert not hf.is_ignored("thinker.audio_tower.proj.bias", arch)
  # Qwen2-Audio's table is untouched: its position table and projector have no Omni twin.
  assert hf.hf_to_nnx("audio_tower.embed_positions.weight", arch) is None
  assert hf.hf_to_nnx("multi_modal_projector.linear.weight", arch) is None


def test_key_table_covers_every_parameter_both_ways():
  model = F.random_model(F.jax_config(SPEC))
  names = _flat(model)
  assert "audio_tower.proj.kernel" in names and "audio_tower.embed_positions" not in names
  for name in names:
    hf_key, _ = hf.nnx_to_hf(name, "qwen2_5_omni")
    assert hf.hf_to_nnx(hf_key, "qwen2_5_omni")[0] == name


@pytest.mark.parametrize("tie", [False, True])
def test_save_then_transformers_from_pretrained(tmp_path, tie):
  from transformers import Qwen2_5OmniThinkerForConditionalGeneration
  model = F.random_model(F.jax_config(SPEC, tie_word_embeddings=tie), seed=5)
  hf.save(model, tmp_path)
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["model_type"] == "qwen2_5_omni_thinker" and config["dtype"] == "float32"
  hf_model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tmp_path).eval()
  _assert_same_logits(model, hf_model, _batch())
  again = hf.load(tmp_path)
  assert again.config.arch == "qwen2_5_omni" and again.config.text.tie_word_embeddings == tie
  a, b = _flat(model), _flat(again)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_full_qwen2_5_omni_layout_loads_its_thinker(tmp_path):
  """The release layout: model_type qwen2_5_omni, thinker_config nested, `thinker.*` keys beside
  talker / token2wav tensors, in two files with an index. Same weights, same model."""
  thinker_dir, hf_model = F.build_hf_checkpoint(tmp_path / "thinker", SPEC, seed=3)
  thinker = hf.load(thinker_dir)
  tensors = load_file(thinker_dir / hf.SINGLE_FILE)
  assert any(k.startswith("visual.") for k in tensors)  # transformers' thinker has a vision tower
  full = tmp_path / "full"
  full.mkdir()
  rng = np.random.default_rng(0)
  first = {f"thinker.{k}": v for i, (k, v) in enumerate(sorted(tensors.items())) if i % 2}
  second = {f"thinker.{k}": v for i, (k, v) in enumerate(sorted(tensors.items())) if not i % 2}
  second["talker.model.layers.0.mlp.up_proj.weight"] = rng.normal(size=(7, 5)).astype(np.float32)
  second["talker.codec_head.weight"] = rng.normal(size=(9, 3)).astype(np.float32)
  first["token2wav.code2wav_bigvgan_model.conv_pre.weight"] = np.ones((4, 2, 3), np.float32)
  names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
  weight_map = {}
  for name, part in zip(names, (first, second)):
    save_file(part, full / name, metadata={"format": "pt"})
    weight_map.update({k: name for k in part})
  (full / hf.INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
  thinker_config = json.loads((thinker_dir / "config.json").read_text())
  (full / "config.json").write_text(json.dumps({
      "architectures": ["Qwen2_5OmniModel"], "model_type": "qwen2_5_omni",
      "enable_audio_output": True, "thinker_config": thinker_config,
      "talker_config": {"model_type": "qwen2_5_omni_talker", "hidden_size": 5},
      "token2wav_config": {"model_type": "qwen2_5_omni_token2wav"}, "torch_dtype": "float32"}))
  model = hf.load(full)
  assert model.config == thinker.config
  a, b = _flat(thinker), _flat(model)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  _assert_same_logits(model, hf_model, _batch())


def test_config_errors_name_the_file(tmp_path):
  cfg = F.jax_config(SPEC).to_hf()
  (tmp_path / "config.json").write_text(json.dumps(dict(cfg, audio_config=dict(
      cfg["audio_config"], output_dim=SPEC.hidden_size + 1))))
  with pytest.raises(ValueError, match=r"config\.json: .*output_dim=33 differs from .*hidden_size=32"):
    hf.load(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_omni"}))
  with pytest.raises(ValueError, match="without a thinker_config"):
    hf.load(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
  with pytest.raises(ValueError, match=r"model_type='llava', expected one of"):
    hf.load(tmp_path)
