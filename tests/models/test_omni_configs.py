"""Qwen2.5-Omni presets, its config.json (both layouts), and the Omni experiment configs."""

import math
import pathlib

import jax
import pytest
from flax import nnx

from cesar_jax import main
from cesar_jax.models import AudioLM, config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def _num_params(cfg, part=None):
  model = nnx.eval_shape(lambda: AudioLM(cfg, rngs=nnx.Rngs(0)))
  state = nnx.state(model if part is None else getattr(model, part), nnx.Param)
  return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


def test_qwen2_5_omni_7b_preset_sizes():
  # Counted from 1- and 2-layer copies (tracing 60 layers takes seconds).
  def count(part, layers):
    one = _num_params(config.preset("qwen2_5_omni_7b", num_hidden_layers=1, encoder_layers=1), part)
    two = _num_params(config.preset("qwen2_5_omni_7b", num_hidden_layers=2, encoder_layers=2), part)
    return one + (layers - 1) * (two - one)
  # The text model has Qwen2.5-7B's dimensions: its model card's 7.61B, exactly 7,615,616,512.
  assert count("language_model", 28) == 7_615_616_512
  # The audio tower: Whisper-large-v3's encoder (~0.64B) minus its position table, plus proj.
  assert round(count("audio_tower", 32) / 1e9, 2) == 0.64
  cfg = config.preset("qwen2_5_omni_7b")
  assert cfg.arch == "qwen2_5_omni" and cfg.text.kv_head_dim == 128
  assert config.omni_mrope_section(128) == [16, 24, 24]  # the release's mrope_section


def test_tiny_omni_preset():
  tiny, omni = config.preset("tiny"), config.preset("tiny_omni")
  assert omni.arch == "qwen2_5_omni" and tiny.arch == "qwen2_audio"
  assert omni.text.hidden_size == tiny.text.hidden_size and omni.audio.d_model == tiny.audio.d_model
  assert _num_params(omni) < 1e6
  assert config.preset("tiny_omni", n_window=7).audio.n_window == 7
  with pytest.raises(ValueError, match="arch='qwen3' is not one of"):
    config.preset("tiny", arch="qwen3")


def _release_config():
  """The layout of Qwen2.5-Omni-7B's config.json (transformers 4 era, sparse sub-configs)."""
  thinker = {
      "model_type": "qwen2_5_omni_thinker", "audio_token_index": 151646,
      "image_token_index": 151655, "video_token_index": 151656, "vision_start_token_id": 151652,
      "vision_end_token_id": 151653, "torch_dtype": "bfloat16",
      "audio_config": {"model_type": "qwen2_5_omni_audio_encoder", "d_model": 1280,
                       "encoder_layers": 32, "encoder_attention_heads": 20,
                       "encoder_ffn_dim": 5120, "num_mel_bins": 128, "n_window": 100,
                       "output_dim": 3584, "max_source_positions": 1500},
      "text_config": {"model_type": "qwen2_5_omni_text", "hidden_size": 3584,
                      "intermediate_size": 18944, "num_hidden_layers": 28,
                      "num_attention_heads": 28, "num_key_value_heads": 4,
                      "rope_theta": 1000000.0, "rope_scaling": {"type": "mrope",
                                                                "mrope_section": [16, 24, 24]},
                      "vocab_size": 152064, "rms_norm_eps": 1e-6, "sliding_window": 32768,
                      "use_sliding_window": False, "max_position_embeddings": 32768,
                      "eos_token_id": 151645, "pad_token_id": 151643},
      "vision_config": {"depth": 32, "hidden_size": 1280},
  }
  return {"architectures": ["Qwen2_5OmniModel"], "model_type": "qwen2_5_omni",
          "enable_audio_output": True, "thinker_config": thinker,
          "talker_config": {"model_type": "qwen2_5_omni_talker"}, "torch_dtype": "bfloat16"}


def test_release_config_json_is_the_preset():
  hf = _release_config()
  cfg = config.AudioLMConfig.from_hf(hf, dtype="bfloat16", param_dtype="float32")
  want = config.preset("qwen2_5_omni_7b", dtype="bfloat16", param_dtype="float32")
  assert cfg.checkpoint_dtype == "bfloat16"  # remembered for the export
  assert cfg.replace(checkpoint_dtype=None) == want
  # The standalone thinker config is the same model; to_hf -> from_hf round-trips.
  thinker = config.AudioLMConfig.from_hf(hf["thinker_config"])
  assert thinker == config.preset("qwen2_5_omni_7b", dtype="bfloat16", param_dtype="bfloat16")
  assert config.AudioLMConfig.from_hf(want.to_hf(), dtype="bfloat16") == want


def test_other_rope_types_are_refused():
  hf = _release_config()
  hf["thinker_config"]["text_config"]["rope_scaling"]["type"] = "yarn"
  with pytest.raises(ValueError, match="rope_type='yarn' is not supported"):
    config.AudioLMConfig.from_hf(hf)


def _load(name, arg=None):
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(CONFIGS.parent))
  import importlib  # pylint: disable=g-import-not-at-top
  return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.mark.parametrize("name", ["qwen2_5_omni_7b", "qwen2_5_omni_7b_cesar",
                                  "qwen2_5_omni_7b_ke_omni_r"])
def test_omni_7b_configs_load_and_run_a_real_job(name):
  for arg in (None, "steps=5,init_from=/ckpt/omni"):
    c = _load(name, arg)
    assert c.job in main.JOBS
    assert (c.model.preset, c.model.param_dtype, c.model.dtype) == (
        "qwen2_5_omni_7b", "float32", "bfloat16")
    assert config.from_config_dict(c.model).arch == "qwen2_5_omni"
    assert c.optim.total_steps == c.steps
    assert c.data.batch_size % c.grpo.grad_accum_steps == 0
    with pytest.raises(AttributeError):
      c.no_such_field = 1  # locked


def test_published_recipe_values():
  cesar = _load("qwen2_5_omni_7b_cesar")
  assert (cesar.sampling.num_samples, cesar.optim.lr, cesar.data.batch_size) == (8, 1e-5, 32)
  assert dict(cesar.rewards.weights) == {"accuracy": 5.0, "format": 1.0, "consistency": 1.0,
                                         "keywords": 1.0, "overthinking": 1.0}
  assert cesar.rewards.overthinking.max_think_tokens == 256
  ke = _load("qwen2_5_omni_7b_ke_omni_r")
  assert ke.grpo.beta == 0.01 and dict(ke.rewards.weights) == {"accuracy": 2.0, "format": 1.0}
  assert (ke.sampling.budget_mode, ke.sampling.max_new_tokens) == ("prompted", 64)
  assert ke.sampling.think_budget == 50 and _load("qwen2_5_omni_7b_ke_omni_r",
                                                  "think_words=30").sampling.think_budget == 30


def test_smoke_config_arch_arg():
  assert _load("smoke").model.preset == "tiny"
  omni = _load("smoke", "arch=omni")
  assert omni.model.preset == "tiny_omni"
  assert config.from_config_dict(omni.model).arch == "qwen2_5_omni"
  with pytest.raises(ValueError, match="arch='omnii'; choose from"):
    _load("smoke", "arch=omnii")


def test_the_thinker_flag_decides_tying():
  # transformers ties the thinker's head by its own tie_word_embeddings (default False), not by
  # text_config's (whose class default is True).
  thinker = dict(_release_config()["thinker_config"])
  thinker["text_config"] = dict(thinker["text_config"], tie_word_embeddings=True)
  assert not config.AudioLMConfig.from_hf(thinker).text.tie_word_embeddings
  assert config.AudioLMConfig.from_hf(dict(thinker, tie_word_embeddings=True)).text.tie_word_embeddings
