"""HF safetensors <-> AudioLM: key table, save -> transformers round trip, sharded files, errors."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

import hf_fixtures as F
from cesar_jax.checkpoints import hf

SPEC = F.HFSpec(num_key_value_heads=2)
T = 29  # = the decoder test's prompt + steps: the same compiled forward is reused


def _batch():
  return F.make_batch(SPEC, feature_lengths=[SPEC.feature_frames, 30], text_lengths=[5, 8],
                      seed=11, total_length=T)


def _assert_same_logits(model, hf_model, batch):
  m = batch["attention_mask"].astype(bool)
  ours, ref = F.jax_forward(model, batch), F.hf_forward(hf_model, batch)
  np.testing.assert_allclose(ours[m], ref[m], atol=1e-4)
  assert np.abs(ref).max() > 0.5


def _flat(model):
  return {hf._dotted(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model))}


def test_key_table_hand_examples():
  assert hf.hf_to_nnx("language_model.model.layers.13.self_attn.k_proj.bias") == (
      "language_model.layers.13.self_attn.k_proj.bias", "none")
  assert hf.hf_to_nnx("audio_tower.conv2.weight") == ("audio_tower.conv2.kernel", "conv")
  assert hf.hf_to_nnx("audio_tower.layers.0.self_attn.k_proj.bias") is None  # no such bias
  assert hf.hf_to_nnx("language_model.model.layers.0.self_attn.o_proj.bias") is None
  # transformers 5 in-memory names are accepted too.
  assert hf.hf_to_nnx("model.language_model.norm.weight") == ("language_model.norm.scale", "none")
  assert hf.hf_to_nnx("lm_head.weight") == ("language_model.lm_head.kernel", "linear")
  assert hf.nnx_to_hf("audio_tower.layers.1.final_layer_norm.scale") == (
      "audio_tower.layers.1.final_layer_norm.weight", "none")


def test_key_table_covers_every_parameter_both_ways():
  model = F.random_model(F.jax_config(SPEC))
  for name in _flat(model):
    hf_key, _ = hf.nnx_to_hf(name)
    assert hf.hf_to_nnx(hf_key)[0] == name


@pytest.mark.parametrize("tie", [False, True])
def test_save_then_transformers_from_pretrained(tmp_path, tie):
  from transformers import Qwen2AudioForConditionalGeneration
  model = F.random_model(F.jax_config(SPEC, tie_word_embeddings=tie), seed=5)
  hf.save(model, tmp_path)
  hf_model = Qwen2AudioForConditionalGeneration.from_pretrained(tmp_path).eval()
  _assert_same_logits(model, hf_model, _batch())
  # And back: exactly the same parameters, tied again.
  again = hf.load(tmp_path)
  assert again.config.text.tie_word_embeddings == tie
  a, b = _flat(model), _flat(again)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_sharded_save_writes_an_index(tmp_path):
  from transformers import Qwen2AudioForConditionalGeneration
  model = F.random_model(F.jax_config(SPEC), seed=6)
  hf.save(model, tmp_path, max_shard_bytes=20_000)
  index = json.loads((tmp_path / hf.INDEX_FILE).read_text())
  files = sorted(set(index["weight_map"].values()))
  assert len(files) > 2 and all((tmp_path / f).exists() for f in files)
  assert not (tmp_path / hf.SINGLE_FILE).exists()
  assert index["metadata"]["total_size"] == sum(v.nbytes for v in _flat(model).values())
  hf_model = Qwen2AudioForConditionalGeneration.from_pretrained(tmp_path).eval()
  _assert_same_logits(model, hf_model, _batch())
  reloaded = _flat(hf.load(tmp_path))
  for k, v in _flat(model).items():
    np.testing.assert_array_equal(reloaded[k], v, err_msg=k)


def test_bfloat16_load(tmp_path):
  model = F.random_model(F.jax_config(SPEC), seed=7)
  hf.save(model, tmp_path)
  low = hf.load(tmp_path, dtype=jnp.bfloat16)
  assert low.config.param_dtype == "bfloat16" and low.config.dtype == "bfloat16"
  assert low.language_model.layers[0].mlp.up_proj.kernel.get_value().dtype == jnp.bfloat16
  batch = _batch()
  ours, ref = F.jax_forward(low, batch), F.jax_forward(model, batch)
  assert ours.dtype == np.float32
  m = batch["attention_mask"].astype(bool)
  err = np.abs(ours[m] - ref[m]).max()
  assert 0 < err < 0.1 * np.abs(ref).max()  # bf16 rounding, nothing worse


@pytest.fixture()
def saved(tmp_path):
  model = F.random_model(F.jax_config(SPEC), seed=8)
  hf.save(model, tmp_path)
  return tmp_path, load_file(tmp_path / hf.SINGLE_FILE)


def _rewrite(path, tensors):
  save_file(tensors, path / hf.SINGLE_FILE, metadata={"format": "pt"})


def test_missing_key_is_named(saved):
  path, tensors = saved
  del tensors["language_model.model.layers.1.mlp.up_proj.weight"]
  _rewrite(path, tensors)
  with pytest.raises(ValueError, match=r"missing keys .*'language_model\.model\.layers\.1\.mlp\.up_proj\.weight'"):
    hf.load(path)


def test_unexpected_key_is_named(saved):
  path, tensors = saved
  tensors["audio_tower.layers.0.self_attn.k_proj.bias"] = np.zeros(SPEC.d_model, np.float32)
  _rewrite(path, tensors)
  with pytest.raises(ValueError, match=r"unexpected key 'audio_tower\.layers\.0\.self_attn\.k_proj\.bias' in .*model\.safetensors"):
    hf.load(path)


def test_unexpected_layer_is_named(saved):
  path, tensors = saved
  tensors["language_model.model.layers.7.input_layernorm.weight"] = np.ones(SPEC.hidden_size, np.float32)
  _rewrite(path, tensors)
  with pytest.raises(ValueError, match=r"unexpected key 'language_model\.model\.layers\.7\.input_layernorm\.weight'.*does not exist"):
    hf.load(path)


def test_misshaped_key_is_named(saved):
  path, tensors = saved
  key = "language_model.model.layers.0.self_attn.k_proj.weight"
  tensors[key] = np.zeros((SPEC.hidden_size, SPEC.hidden_size), np.float32)
  _rewrite(path, tensors)
  kv = SPEC.num_key_value_heads * SPEC.hidden_size // SPEC.num_attention_heads
  with pytest.raises(ValueError, match=rf"shape mismatch for key '{key}'.*stored \({SPEC.hidden_size}, {SPEC.hidden_size}\).*expects \({SPEC.hidden_size}, {kv}\)"):
    hf.load(path)


def test_missing_files_are_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    hf.load(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps(F.jax_config(SPEC).to_hf()))
  with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
    hf.load(tmp_path)
