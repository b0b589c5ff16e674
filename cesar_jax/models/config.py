"""Static model configuration: frozen dataclasses mirroring Hugging Face's Qwen2-Audio configs.

Field names follow `Qwen2AudioEncoderConfig` / `Qwen2Config` so `from_hf` / `to_hf` are plain
renames. Configs are hashable (only scalars), so they can sit inside an NNX graphdef or be a
static argument of a jitted function.

Build one:

  cfg = config.preset("tiny")                                   # CPU tests / demo
  cfg = config.preset("tiny", vocab_size=tok.vocab_size, audio_token_id=tok.audio_id)
  cfg = config.preset("qwen2_audio_7b", dtype="bfloat16", param_dtype="bfloat16")
  cfg = config.from_config_dict(config.model)   # ConfigDict: `preset` + any field override
  cfg = config.AudioLMConfig.from_hf(json.load(open("config.json")))

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

  def __post_init__(self):
    if self.d_model % self.encoder_attention_heads:
      raise ValueError(f"AudioEncoderConfig: d_model={self.d_model} is not divisible by "
                       f"encoder_attention_heads={self.encoder_attention_heads}")
    if self.activation_function not in ("gelu",):
      raise ValueError(f"AudioEncoderConfig: activation_function={self.activation_function!r} "
                       "is not supported (only 'gelu', as in Qwen2-Audio)")


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


@dataclasses.dataclass(frozen=True)
class AudioLMConfig:
  """Qwen2-Audio: audio encoder + linear projector + Qwen2 decoder.

  dtype: compute dtype (activations, KV cache); param_dtype: parameter storage dtype. Logits
  are always float32. Use "float32" on CPU, "bfloat16" for both on accelerators.
  """
  audio: AudioEncoderConfig = AudioEncoderConfig()
  text: DecoderConfig = DecoderConfig()
  audio_token_id: int = 151646
  dtype: str = "float32"
  param_dtype: str = "float32"
  # Rematerialisation of encoder and decoder layers under differentiation: none | full | dots
  # (models/remat.py); the forward values are the same whatever the policy.
  remat: str = "none"

  def __post_init__(self):
    from cesar_jax.models import remat as remat_lib  # pylint: disable=g-import-not-at-top
    remat_lib.check_policy(self.remat, "AudioLMConfig.remat")
    if not 0 <= self.audio_token_id < self.text.vocab_size:
      raise ValueError(f"AudioLMConfig: audio_token_id={self.audio_token_id} is outside the "
                       f"vocabulary [0, {self.text.vocab_size})")
    for name in ("dtype", "param_dtype"):
      jnp.dtype(getattr(self, name))  # Raises on a bad name.

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def replace(self, **overrides: Any) -> AudioLMConfig:
    """Copy with overrides; keys may name fields of this class, `audio` or `text` (flat)."""
    return _apply_overrides(self, overrides)

  # Hugging Face config.json <-> config.

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], **overrides: Any) -> AudioLMConfig:
    """From a Qwen2-Audio `config.json` dict (transformers 4 `rope_theta` or 5 `rope_parameters`)."""
    if hf.get("model_type") not in (None, "qwen2_audio"):
      raise ValueError(f"config.json: model_type={hf.get('model_type')!r}, expected 'qwen2_audio'")
    audio_hf = dict(hf.get("audio_config") or {})
    text_hf = dict(hf.get("text_config") or {})
    audio = AudioEncoderConfig(**{
        f.name: audio_hf[f.name] for f in dataclasses.fields(AudioEncoderConfig) if f.name in audio_hf})
    rope = text_hf.get("rope_parameters") or text_hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
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
    text = DecoderConfig(**text_kwargs)
    audio_token_id = hf.get("audio_token_index", hf.get("audio_token_id", cls.audio_token_id))
    dtype = _hf_dtype_name(hf.get("dtype") or hf.get("torch_dtype") or "float32")
    out = cls(audio=audio, text=text, audio_token_id=audio_token_id, dtype=dtype, param_dtype=dtype)
    return out.replace(**overrides) if overrides else out

  def to_hf(self) -> dict[str, Any]:
    """The `config.json` dict transformers' `Qwen2AudioForConditionalGeneration` reads."""
    a, t = self.audio, self.text
    audio_hf = dataclasses.asdict(a)
    audio_hf.pop("layer_norm_eps")
    audio_hf.update(model_type="qwen2_audio_encoder", dropout=0.0, attention_dropout=0.0,
                    activation_dropout=0.0, encoder_layerdrop=0.0, scale_embedding=False)
    text_hf = {k: v for k, v in dataclasses.asdict(t).items() if k != "rope_theta"}
    text_hf.update(model_type="qwen2", head_dim=t.kv_head_dim, use_sliding_window=False,
                   rope_parameters={"rope_type": "default", "rope_theta": t.rope_theta},
                   layer_types=["full_attention"] * t.num_hidden_layers, attention_dropout=0.0)
    return {
        "architectures": ["Qwen2AudioForConditionalGeneration"],
        "model_type": "qwen2_audio",
        "audio_config": audio_hf,
        "text_config": text_hf,
        "audio_token_index": self.audio_token_id,
        "dtype": self.param_dtype,
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

PRESETS: dict[str, AudioLMConfig] = {
    "qwen2_audio_7b": _QWEN2_AUDIO_7B,
    "small": _SMALL,
    "tiny": _TINY,
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
