"""Model configs: presets, overrides, ConfigDict sections, HF config.json both ways."""

import math

import jax
import ml_collections
import pytest
from flax import nnx

from cesar_jax.models import AudioLM, config


def _num_params(cfg):
  model = nnx.eval_shape(lambda: AudioLM(cfg, rngs=nnx.Rngs(0)))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_preset_sizes():
  # Qwen2-Audio-7B is an 8.4B-parameter model on its model card. Counted from 1- and 2-layer
  # copies (tracing all 64 layers takes seconds): total = n(1) + 31 * (n(2) - n(1)).
  one = _num_params(config.preset("qwen2_audio_7b", num_hidden_layers=1, encoder_layers=1))
  two = _num_params(config.preset("qwen2_audio_7b", num_hidden_layers=2, encoder_layers=2))
  assert round((one + 31 * (two - one)) / 1e9, 1) == 8.4
  assert 30e6 < _num_params(config.preset("small")) < 40e6
  assert _num_params(config.preset("tiny")) < 1e6


def test_preset_overrides():
  cfg = config.preset("tiny", vocab_size=300, num_hidden_layers=3, d_model=32, dtype="bfloat16")
  assert (cfg.text.vocab_size, cfg.text.num_hidden_layers, cfg.audio.d_model) == (300, 3, 32)
  assert cfg.audio_token_id == 299  # followed the vocabulary down
  assert config.preset("tiny", vocab_size=300, audio_token_id=7).audio_token_id == 7
  assert cfg.compute_dtype == jax.numpy.bfloat16 and cfg.param_dtype == "float32"
  with pytest.raises(ValueError, match="override 'hidden' is not a field"):
    config.preset("tiny", hidden=3)
  with pytest.raises(ValueError, match="unknown model preset 'huge'"):
    config.preset("huge")
  with pytest.raises(ValueError, match="audio_token_id=600 is outside the vocabulary"):
    config.preset("tiny", audio_token_id=600)
  with pytest.raises(ValueError, match="not a multiple of num_key_value_heads=3"):
    config.preset("tiny", num_key_value_heads=3)


def test_from_config_dict():
  section = ml_collections.ConfigDict(dict(preset="small", vocab_size=1000, audio_token_id=5,
                                           checkpoint=""))
  cfg = config.from_config_dict(section, ignore=("checkpoint",))
  assert cfg == config.preset("small", vocab_size=1000, audio_token_id=5)
  with pytest.raises(ValueError, match="'checkpoint' is not a field"):
    config.from_config_dict(section)


def test_hf_round_trip_and_rope_spellings():
  cfg = config.preset("small", tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-5)
  hf = cfg.to_hf()
  assert hf["text_config"]["rope_parameters"] == {"rope_type": "default", "rope_theta": 1e6}
  assert config.AudioLMConfig.from_hf(hf) == cfg
  # transformers 4 spelling (the released Qwen2-Audio config.json): `rope_theta`, `torch_dtype`.
  hf4 = dict(hf, torch_dtype="bfloat16", text_config=dict(hf["text_config"], rope_theta=500.0))
  del hf4["dtype"], hf4["text_config"]["rope_parameters"]
  old = config.AudioLMConfig.from_hf(hf4)
  assert old.text.rope_theta == 500.0 and old.param_dtype == "bfloat16"
  with pytest.raises(ValueError, match="rope_type='yarn' is not supported"):
    config.AudioLMConfig.from_hf(dict(hf, text_config=dict(
        hf["text_config"], rope_parameters={"rope_type": "yarn", "rope_theta": 1.0})))


def test_released_qwen2_audio_7b_config_json():
  """The published Qwen2-Audio-7B-Instruct config.json (transformers 4 era, sparse text_config:
  unset fields take Qwen2Config defaults) is the `qwen2_audio_7b` preset."""
  released = {
      "architectures": ["Qwen2AudioForConditionalGeneration"], "model_type": "qwen2_audio",
      "audio_token_index": 151646, "vocab_size": 156032, "torch_dtype": "bfloat16",
      "audio_config": {"model_type": "qwen2_audio_encoder", "num_mel_bins": 128,
                       "encoder_layers": 32, "encoder_attention_heads": 20,
                       "encoder_ffn_dim": 5120, "d_model": 1280, "activation_function": "gelu",
                       "scale_embedding": False, "max_source_positions": 1500},
      "text_config": {"bos_token_id": 151643, "eos_token_id": 151645, "intermediate_size": 11008,
                      "max_position_embeddings": 8192, "model_type": "qwen2", "rope_theta": 10000,
                      "rms_norm_eps": 1e-05, "sliding_window": 32768, "torch_dtype": "bfloat16",
                      "use_mrope": False, "vocab_size": 156032},
  }
  cfg = config.AudioLMConfig.from_hf(released)
  assert cfg == config.preset("qwen2_audio_7b", dtype="bfloat16", param_dtype="bfloat16")
