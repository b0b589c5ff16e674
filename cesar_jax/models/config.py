"""Static model configuration: frozen dataclasses mirroring Hugging Face's audio LM configs.

Two architectures (`AudioLMConfig.arch`), one config type:

  "qwen2_audio"   Qwen2-Audio: Whisper encoder (30 s window, learned-shape position table) +
                  linear projector + Qwen2 decoder.
  "qwen2_5_omni"  the Qwen2.5-Omni thinker: chunked audio encoder (`n_window`, computed
                  positions, `ln_post` + `proj` to the text width inside the tower) + Qwen2
                  decoder with M-RoPE, which for audio + text is 1D RoPE (see audio_lm.py).

Field names follow `Qwen2AudioEncoderConfig` / `Qwen2_5OmniAudioEncoderConfig` / `Qwen2Config`
so `from_hf` / `to_hf` are plain renames. Configs are hashable (only scalars), so they can sit inside an NNX graphdef or be a
static argument of a jitted function.

Build one:

  cfg = config.preset("tiny")                                   # CPU tests / demo
  cfg = config.preset("tiny", vocab_size=tok.vocab_size, audio_token_id=tok.audio_id)
  cfg = config.preset("qwen2_audio_7b", dtype="bfloat16", param_dtype="bfloat16")
  cfg = config.from_config_dict(config.model)   # ConfigDict: `preset` + any field override
  cfg = config.AudioLMConfig.from_hf(json.load(open("config.json")))   # either architecture

Override keys are the field names of `AudioEncoderConfig`, `DecoderConfig` or `AudioLMConfig`
(they do not collide), e.g. `preset("small", num_hidden_layers=4, d_model=128)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class AudioEncoderConfig:
  """Whisper-style audio encoder of Qwen2-Audio (`Qwen2AudioEncoderConfig`)."""
  num_mel_bins: int = 128
  d_model: int = 1280
  encoder_layers: int = 32
  encoder_attention_heads: int = 20
  encoder_ffn_dim: int = 5120
  # Positions after the stride-2 conv: input features hold 2 * max_source_positions frames
  # at most (HF requires exactly that many; we also accept fewer, see audio_encoder.py).
  max_source_positions: int = 1500
  activation_function: str = "gelu"
  layer_norm_eps: float = 1e-5  # torch.nn.LayerNorm default, not stored in HF configs.
  # Qwen2.5-Omni only: frames are cut into chunks of 2 * n_window (Qwen2-Audio ignores it).
  n_window: int = 100

  def __post_init__(self):
    if self.d_model % self.encoder_attention_heads:
      raise ValueError(f"AudioEncoderConfig: d_model={self.d_model} is not divisible by "
                       f"encoder_attention_heads={self.encoder_attention_heads}")
    if self.activation_function not in ("gelu",):
      raise ValueError(f"AudioEncoderConfig: activation_function={self.activation_function!r} "
                       "is not supported (only 'gelu', as in Qwen2-Audio)")
    if self.n_window <= 0:
      raise ValueError(f"AudioEncoderConfig: n_window={self.n_window} must be positive")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Qwen2 decoder (`Qwen2Config`). `head_dim=None` means hidden_size // num_attention_heads."""
  vocab_size: int = 151936
  hidden_size: int = 4096
  intermediate_size: int = 22016
  num_hidden_layers: int = 32
  num_attention_heads: int = 32
  num_key_value_heads: int = 32
  head_dim: int | None = None
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = False
  max_position_embeddings: int = 32768
  hidden_act: str = "silu"
  bos_token_id: int | None = None
  eos_token_id: int | None = None
  pad_token_id: int | None = None

  def __post_init__(self):
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(f"DecoderConfig: num_attention_heads={self.num_attention_heads} is not a "
                       f"multiple of num_key_value_heads={self.num_key_value_heads}")
    if self.head_dim is None and self.hidden_size % self.num_attention_heads:
      raise ValueError(f"DecoderConfig: hidden_size={self.hidden_size} is not divisible by "
                       f"num_attention_heads={self.num_attention_heads}; set head_dim")
    if self.hidden_act != "silu":
      raise ValueError(f"DecoderConfig: hidden_act={self.hidden_act!r} is not supported (only 'silu')")

  @property
  def kv_head_dim(self) -> int:
    """The per-head width actually used (HF: `head_dim or hidden_size // num_attention_heads`)."""
    return self.head_dim or self.hidden_size // self.num_attention_heads


ARCHS = ("qwen2_audio", "qwen2_5_omni")
# config.json `model_type`s and the architecture each loads as.
HF_MODEL_TYPES = {"qwen2_audio": "qwen2_audio", "qwen2_5_omni_thinker": "qwen2_5_omni",
                  "qwen2_5_omni": "qwen2_5_omni"}


@dataclasses.dataclass(frozen=True)
class AudioLMConfig:
  """An audio LM: audio encoder (+ projector) + Qwen2 decoder; `arch` picks the encoder (ARCHS).

  dtype: compute dtype (activations, KV cache); param_dtype: parameter storage dtype (the
  optimizer's float32 masters in the 7B recipes). Logits are always float32. Use "float32" on
  CPU, bfloat16 compute on accelerators. checkpoint_dtype: the dtype of the HF checkpoint the
  model came from when it differs from param_dtype (None: the same); `hf.save` writes it.
  """
  audio: AudioEncoderConfig = AudioEncoderConfig()
  text: DecoderConfig = DecoderConfig()
  audio_token_id: int = 151646
  dtype: str = "float32"
  param_dtype: str = "float32"
  arch: str = "qwen2_audio"
  checkpoint_dtype: str | None = None
  # Rematerialisation of encoder and decoder layers under differentiation: none | full | dots
  # (models/remat.py); the forward values are the same whatever the policy.
  remat: str = "none"

  def __post_init__(self):
    from cesar_jax.models import remat as remat_lib  # pylint: disable=g-import-not-at-top
    remat_lib.check_policy(self.remat, "AudioLMConfig.remat")
    if self.arch not in ARCHS:
      raise ValueError(f"AudioLMConfig: arch={self.arch!r} is not one of {ARCHS}")
    if not 0 <= self.audio_token_id < self.text.vocab_size:
      raise ValueError(f"AudioLMConfig: audio_token_id={self.audio_token_id} is outside the "
                       f"vocabulary [0, {self.text.vocab_size})")
    for name in ("dtype", "param_dtype"):
      jnp.dtype(getattr(self, name))  # Raises on a bad name.
    if self.checkpoint_dtype is not None:
      if jnp.dtype(self.checkpoint_dtype) == jnp.dtype(self.param_dtype):
        object.__setattr__(self, "checkpoint_dtype", None)  # One spelling of "the same".
      else:
        object.__setattr__(self, "checkpoint_dtype", jnp.dtype(self.checkpoint_dtype).name)

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  @property
  def export_dtype(self) -> str:
    """The dtype `hf.save` writes: the source checkpoint's, else param_dtype."""
    return self.checkpoint_dtype or self.param_dtype

  def num_audio_tokens(self, feature_lengths):
    """Audio tokens (`<|AUDIO|>` placeholders) per clip of L valid frames, for this arch."""
    from cesar_jax.models import audio_tokens  # pylint: disable=g-import-not-at-top
    return audio_tokens.for_arch(self.arch)(feature_lengths)

  def replace(self, **overrides: Any) -> AudioLMConfig:
    """Copy with overrides; keys may name fields of this class, `audio` or `text` (flat)."""
    return _apply_overrides(self, overrides)

  # Hugging Face config.json <-> config.

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], **overrides: Any) -> AudioLMConfig:
    """From a `config.json` dict: Qwen2-Audio (`qwen2_audio`), a Qwen2.5-Omni thinker
    (`qwen2_5_omni_thinker`) or the full Qwen2.5-Omni (`qwen2_5_omni`, its `thinker_config`).
    transformers 4 `rope_theta` / `torch_dtype` or 5 `rope_parameters` / `dtype` spellings."""
    model_type = hf.get("model_type")
    if model_type not in (None, *HF_MODEL_TYPES):
      raise ValueError(f"config.json: model_type={model_type!r}, expected one of "
                       f"{sorted(HF_MODEL_TYPES)}")
    dtype = _hf_dtype_name(hf.get("dtype") or hf.get("torch_dtype") or "float32")
    if model_type == "qwen2_5_omni":
      if not hf.get("thinker_config"):
        raise ValueError("config.json: model_type='qwen2_5_omni' without a thinker_config")
      thinker = dict(hf["thinker_config"])
      thinker.setdefault("dtype", thinker.get("torch_dtype") or dtype)
      return cls.from_hf(dict(thinker, model_type="qwen2_5_omni_thinker"), **overrides)
    arch = HF_MODEL_TYPES.get(model_type, "qwen2_audio")
    audio_hf = dict(hf.get("audio_config") or {})
    text_hf = dict(hf.get("text_config") or {})
    audio = AudioEncoderConfig(**{
        f.name: audio_hf[f.name] for f in dataclasses.fields(AudioEncoderConfig) if f.name in audio_hf})
    if arch == "qwen2_5_omni":
      text_defaults = dict(_OMNI_TEXT_DEFAULTS)
      text_defaults.update(text_hf)
      text_hf = text_defaults
      out_dim = audio_hf.get("output_dim", 3584)
      if out_dim != text_hf["hidden_size"]:
        raise ValueError(f"config.json: audio_config.output_dim={out_dim} differs from "
                         f"text_config.hidden_size={text_hf['hidden_size']}")
      # The thinker's own flag decides (default False), not text_config's, as in transformers.
      text_hf["tie_word_embeddings"] = bool(hf.get("tie_word_embeddings", False))
    text = _text_from_hf(text_hf)
    audio_token_id = hf.get("audio_token_index", hf.get("audio_token_id", cls.audio_token_id))
    param_dtype = overrides.pop("param_dtype", dtype)
    out = cls(audio=audio, text=text, audio_token_id=audio_token_id,
              dtype=overrides.pop("dtype", param_dtype), param_dtype=param_dtype, arch=arch,
              checkpoint_dtype=dtype)
    return out.replace(**overrides) if overrides else out

  def to_hf(self) -> dict[str, Any]:
    """The `config.json` dict transformers reads: `Qwen2AudioForConditionalGeneration` or
    `Qwen2_5OmniThinkerForConditionalGeneration` (a 1-layer placeholder vision config: this
    model has no vision tower, transformers initialises one at random)."""
    a, t = self.audio, self.text
    audio_hf = dataclasses.asdict(a)
    audio_hf.pop("layer_norm_eps")
    audio_hf.update(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                    scale_embedding=False)
    text_hf = {k: v for k, v in dataclasses.asdict(t).items() if k != "rope_theta"}
    text_hf.update(head_dim=t.kv_head_dim, use_sliding_window=False,
                   rope_parameters={"rope_type": "default", "rope_theta": t.rope_theta},
                   layer_types=["full_attention"] * t.num_hidden_layers, attention_dropout=0.0)
    if self.arch == "qwen2_5_omni":
      audio_hf.update(model_type="qwen2_5_omni_audio_encoder", output_dim=t.hidden_size)
      text_hf.update(model_type="qwen2_5_omni_text")
      text_hf["rope_parameters"]["mrope_section"] = omni_mrope_section(t.kv_head_dim)
      return {
          "architectures": ["Qwen2_5OmniThinkerForConditionalGeneration"],
          "model_type": "qwen2_5_omni_thinker",
          "audio_config": audio_hf,
          "text_config": text_hf,
          "vision_config": dict(_OMNI_PLACEHOLDER_VISION, out_hidden_size=t.hidden_size),
          "audio_token_index": self.audio_token_id,
          **_OMNI_SPECIAL_IDS,
          "tie_word_embeddings": t.tie_word_embeddings,
          "dtype": self.export_dtype,
      }
    audio_hf.pop("n_window")
    audio_hf.update(model_type="qwen2_audio_encoder", encoder_layerdrop=0.0)
    text_hf.update(model_type="qwen2")
    return {
        "architectures": ["Qwen2AudioForConditionalGeneration"],
        "model_type": "qwen2_audio",
        "audio_config": audio_hf,
        "text_config": text_hf,
        "audio_token_index": self.audio_token_id,
        "dtype": self.export_dtype,
    }


def _text_from_hf(text_hf: Mapping[str, Any]) -> DecoderConfig:
  """A DecoderConfig from an HF text_config dict (Qwen2 or the Omni thinker's)."""
  rope = text_hf.get("rope_parameters") or text_hf.get("rope_scaling") or {}
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  # "mrope" (Qwen2-VL-era spelling of the Omni thinker's rope): with audio + text only its three
  # position rows are equal, i.e. the default rope (see audio_lm.py).
  if rope_type not in ("default", "mrope"):
    raise ValueError(f"config.json: text_config rope_type={rope_type!r} is not supported")
  if text_hf.get("use_sliding_window"):
    raise ValueError("config.json: text_config.use_sliding_window=true is not supported")
  text_kwargs = {f.name: text_hf[f.name] for f in dataclasses.fields(DecoderConfig)
                 if f.name in text_hf and f.name != "rope_theta"}
  if text_kwargs.get("head_dim") == text_hf.get("hidden_size", DecoderConfig.hidden_size) // text_hf.get(
      "num_attention_heads", DecoderConfig.num_attention_heads):
    text_kwargs["head_dim"] = None  # The default: keeps configs equal however they were written.
  theta = rope.get("rope_theta", text_hf.get("rope_theta"))
  if theta is not None:
    text_kwargs["rope_theta"] = float(theta)
  for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
    if isinstance(text_kwargs.get(key), list):  # Some configs list several eos ids.
      text_kwargs[key] = text_kwargs[key][0]
  return DecoderConfig(**text_kwargs)


def omni_mrope_section(head_dim: int) -> list[int]:
  """An M-RoPE split of head_dim / 2 frequencies into (temporal, height, width) sections.

  Qwen2.5-Omni-7B uses [16, 24, 24] for head_dim 128; for audio + text the three position
  rows are equal, so the split does not change the result (any split summing to head_dim / 2
  is the same model here). Other widths get the same proportions, rounded.
  """
  half = head_dim // 2
  t = max(1, round(half * 16 / 64)) if half > 2 else 1
  h = (half - t + 1) // 2
  return [t, h, half - t - h]


# Defaults of `Qwen2_5OmniTextConfig` (transformers 5) where a sparse config.json omits fields;
# they differ from Qwen2Config's (theta 1e6, 3584 wide, 28 layers, GQA 28:4).
_OMNI_TEXT_DEFAULTS = {
    "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
    "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
    "rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "tie_word_embeddings": False,
    "rope_theta": 1000000.0,
}
# Token ids of Qwen2.5-Omni-7B's thinker config (transformers' defaults; vision ids from the
# released config.json): written so transformers' get_rope_index finds every id it reads.
_OMNI_SPECIAL_IDS = {
    "image_token_index": 151655, "video_token_index": 151656, "audio_start_token_id": 151647,
    "audio_end_token_id": 151648, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "position_id_per_seconds": 25, "seconds_per_chunk": 2,
}
_OMNI_PLACEHOLDER_VISION = {
    "model_type": "qwen2_5_omni_vision_encoder", "depth": 1, "hidden_size": 16,
    "intermediate_size": 16, "num_heads": 2, "fullatt_block_indexes": [0],
}


def _hf_dtype_name(name: str) -> str:
  return {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(name, name)


def _apply_overrides(cfg: AudioLMConfig, overrides: Mapping[str, Any]) -> AudioLMConfig:
  top = {f.name for f in dataclasses.fields(AudioLMConfig)} - {"audio", "text"}
  audio_names = {f.name for f in dataclasses.fields(AudioEncoderConfig)}
  text_names = {f.name for f in dataclasses.fields(DecoderConfig)}
  top_kw, audio_kw, text_kw = {}, {}, {}
  for key, value in overrides.items():
    if key in top:
      top_kw[key] = value
    elif key in audio_names:
      audio_kw[key] = value
    elif key in text_names:
      text_kw[key] = value
    elif key in ("audio", "text"):
      top_kw[key] = value
    else:
      raise ValueError(f"model config override {key!r} is not a field; valid keys: "
                       f"{sorted(top | audio_names | text_names)}")
  audio = dataclasses.replace(top_kw.pop("audio", cfg.audio), **audio_kw)
  text = dataclasses.replace(top_kw.pop("text", cfg.text), **text_kw)
  return dataclasses.replace(cfg, audio=audio, text=text, **top_kw)


# Named presets.

# Qwen2-Audio-7B(-Instruct) `config.json` (Chu et al. 2024, arXiv 2407.10759): unset text fields
# take Qwen2Config defaults (hidden 4096, 32 layers, 32 heads, 32 kv heads, theta 1e4).
_QWEN2_AUDIO_7B = AudioLMConfig(
    audio=AudioEncoderConfig(num_mel_bins=128, d_model=1280, encoder_layers=32,
                             encoder_attention_heads=20, encoder_ffn_dim=5120,
                             max_source_positions=1500),
    text=DecoderConfig(vocab_size=156032, hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       max_position_embeddings=8192, bos_token_id=151643, eos_token_id=151645),
    audio_token_id=151646,
)

# ~32M parameters: sampler benchmarks on one accelerator or a few CPU cores.
_SMALL = AudioLMConfig(
    audio=AudioEncoderConfig(num_mel_bins=128, d_model=256, encoder_layers=4,
                             encoder_attention_heads=4, encoder_ffn_dim=1024,
                             max_source_positions=1500),
    text=DecoderConfig(vocab_size=8192, hidden_size=512, intermediate_size=1408,
                       num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
                       rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=4096),
    audio_token_id=8191,
)

# CPU tests and the demo: two layers each side, width 64.
_TINY = AudioLMConfig(
    audio=AudioEncoderConfig(num_mel_bins=128, d_model=64, encoder_layers=2,
                             encoder_attention_heads=4, encoder_ffn_dim=128,
                             max_source_positions=1500),
    text=DecoderConfig(vocab_size=512, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=4096),
    audio_token_id=511,
)

# The Qwen2.5-Omni-7B thinker (Qwen Team 2025, arXiv 2503.20215). Every number is the default
# of transformers' `Qwen2_5OmniAudioEncoderConfig` / `Qwen2_5OmniTextConfig` /
# `Qwen2_5OmniThinkerConfig` (their docstrings name checkpoint Qwen/Qwen2.5-Omni-7B): audio
# 1280 wide, 32 layers, 20 heads, ffn 5120, 128 mels, n_window 100 (chunks of 200 frames = 2 s),
# max_source_positions 1500, output_dim 3584; text vocab 152064, hidden 3584, ffn 18944,
# 28 layers, 28 heads : 4 kv heads (head_dim 128), rope_theta 1e6, rms eps 1e-6, 32768
# positions, untied head; <|AUDIO|> = 151646. eos <|im_end|> = 151645, pad <|endoftext|> =
# 151643 are Qwen2's tokenizer ids. About 8.9B parameters with the vision tower, which this
# model leaves out (see test_model_config).
_QWEN2_5_OMNI_7B = AudioLMConfig(
    audio=AudioEncoderConfig(num_mel_bins=128, d_model=1280, encoder_layers=32,
                             encoder_attention_heads=20, encoder_ffn_dim=5120,
                             max_source_positions=1500, n_window=100),
    text=DecoderConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                       num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
                       max_position_embeddings=32768, eos_token_id=151645,
                       pad_token_id=151643),
    audio_token_id=151646,
    arch="qwen2_5_omni",
)

# The tiny preset's shapes with the Omni thinker's encoder (chunks of 2 * 50 frames = 1 s).
_TINY_OMNI = dataclasses.replace(
    _TINY, arch="qwen2_5_omni",
    audio=dataclasses.replace(_TINY.audio, n_window=50),
    text=dataclasses.replace(_TINY.text, rope_theta=1000000.0))

PRESETS: dict[str, AudioLMConfig] = {
    "qwen2_audio_7b": _QWEN2_AUDIO_7B,
    "qwen2_5_omni_7b": _QWEN2_5_OMNI_7B,
    "small": _SMALL,
    "tiny": _TINY,
    "tiny_omni": _TINY_OMNI,
}


def preset(name: str, **overrides: Any) -> AudioLMConfig:
  """A named preset with flat field overrides, e.g. `preset("tiny", vocab_size=600, audio_token_id=7)`.

  When only `vocab_size` is overridden, `audio_token_id` (a preset's last id) follows it down so
  the config stays valid; pass the tokenizer's `audio_id` to pin it.
  """
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
  base = PRESETS[name]
  if ("vocab_size" in overrides and "audio_token_id" not in overrides
      and base.audio_token_id >= overrides["vocab_size"]):
    overrides = dict(overrides, audio_token_id=overrides["vocab_size"] - 1)
  return base.replace(**overrides)


def from_config_dict(section: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> AudioLMConfig:
  """From an ml_collections `config.model` section: `preset` (default "tiny") plus field overrides.

  Keys named in `ignore` (e.g. a checkpoint path the caller handles) are skipped; any other
  unknown key is an error naming it.
  """
  items = dict(section.items()) if hasattr(section, "items") else dict(section)
  name = items.pop("preset", "tiny")
  for key in ignore:
    items.pop(key, None)
  return preset(name, **items)
