"""Tiny random transformers Qwen2-Audio and Qwen2.5-Omni thinker checkpoints, built offline.

Shared by the model, checkpoint and sampler tests:

  path, hf_model = build_hf_checkpoint(tmp_path, HFSpec(num_key_value_heads=2))
  path, hf_model = build_hf_checkpoint(tmp_path, OmniSpec(n_window=3))   # the Omni thinker
  batch = make_batch(spec, feature_lengths=[40, 27], text_lengths=[5, 9], seed=0)
  hf_logits = hf_forward(hf_model, batch)            # np.float32[B, T, V]

All weights (biases and norm scales too) are drawn at random so a mis-mapped or ignored tensor
changes the logits. Inputs follow the Qwen2-Audio processor: each clip's placeholders
(`num_audio_tokens(L)` copies of the audio token) sit inside the prompt, prompts are left-padded,
features are padded to exactly 2 * max_source_positions frames as HF requires.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclasses.dataclass(frozen=True)
class HFSpec:
  """Shapes of a tiny Qwen2-Audio. feature_frames = 2 * max_source_positions."""
  vocab_size: int = 96
  hidden_size: int = 32
  intermediate_size: int = 48
  num_hidden_layers: int = 2
  num_attention_heads: int = 4
  num_key_value_heads: int = 4
  tie_word_embeddings: bool = False
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-6
  d_model: int = 24
  encoder_layers: int = 2
  encoder_attention_heads: int = 2
  encoder_ffn_dim: int = 40
  num_mel_bins: int = 16
  feature_frames: int = 48
  audio_token_id: int = 95

  def hf_config(self):
    from transformers import Qwen2AudioConfig
    return Qwen2AudioConfig(
        audio_config=dict(
            model_type="qwen2_audio_encoder", d_model=self.d_model,
            encoder_layers=self.encoder_layers, encoder_attention_heads=self.encoder_attention_heads,
            encoder_ffn_dim=self.encoder_ffn_dim, num_mel_bins=self.num_mel_bins,
            max_source_positions=self.feature_frames // 2),
        text_config=dict(
            model_type="qwen2", vocab_size=self.vocab_size, hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads, max_position_embeddings=256,
            rope_theta=self.rope_theta, rms_norm_eps=self.rms_norm_eps,
            tie_word_embeddings=self.tie_word_embeddings),
        audio_token_index=self.audio_token_id)


@dataclasses.dataclass(frozen=True)
class OmniSpec(HFSpec):
  """Shapes of a tiny Qwen2.5-Omni thinker. Frames are cut into chunks of 2 * n_window; any
  feature_frames works (no 30 s window): clips need not fill a whole number of chunks."""
  n_window: int = 4
  feature_frames: int = 44
  max_source_positions: int = 30
  num_key_value_heads: int = 2
  rope_theta: float = 1000000.0

  def hf_config(self):
    from transformers import Qwen2_5OmniThinkerConfig
    from cesar_jax.models.config import omni_mrope_section
    head_dim = self.hidden_size // self.num_attention_heads
    v = self.vocab_size  # special ids other than audio: unused here, kept inside the vocabulary
    return Qwen2_5OmniThinkerConfig(
        audio_config=dict(
            d_model=self.d_model, encoder_layers=self.encoder_layers,
            encoder_attention_heads=self.encoder_attention_heads,
            encoder_ffn_dim=self.encoder_ffn_dim, num_mel_bins=self.num_mel_bins,
            n_window=self.n_window, output_dim=self.hidden_size,
            max_source_positions=self.max_source_positions),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2,
                           out_hidden_size=self.hidden_size, fullatt_block_indexes=[0]),
        text_config=dict(
            vocab_size=v, hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads, max_position_embeddings=256,
            rms_norm_eps=self.rms_norm_eps, tie_word_embeddings=self.tie_word_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta,
                             "mrope_section": omni_mrope_section(head_dim)}),
        audio_token_index=self.audio_token_id, image_token_index=v - 2,
        video_token_index=v - 3, vision_start_token_id=v - 4, vision_end_token_id=v - 5,
        audio_start_token_id=v - 6, audio_end_token_id=v - 7,
        tie_word_embeddings=self.tie_word_embeddings)


def jax_config(spec: HFSpec, **overrides):
  """The cesar_jax AudioLMConfig of the same shapes (no transformers import needed)."""
  from cesar_jax.models import config
  if isinstance(spec, OmniSpec):
    overrides = dict(dict(arch="qwen2_5_omni", n_window=spec.n_window,
                          max_source_positions=spec.max_source_positions), **overrides)
  cfg = config.AudioLMConfig(
      audio=config.AudioEncoderConfig(
          num_mel_bins=spec.num_mel_bins, d_model=spec.d_model, encoder_layers=spec.encoder_layers,
          encoder_attention_heads=spec.encoder_attention_heads,
          encoder_ffn_dim=spec.encoder_ffn_dim, max_source_positions=spec.feature_frames // 2),
      text=config.DecoderConfig(
          vocab_size=spec.vocab_size, hidden_size=spec.hidden_size,
          intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_hidden_layers,
          num_attention_heads=spec.num_attention_heads,
          num_key_value_heads=spec.num_key_value_heads, rope_theta=spec.rope_theta,
          rms_norm_eps=spec.rms_norm_eps, tie_word_embeddings=spec.tie_word_embeddings,
          max_position_embeddings=256),
      audio_token_id=spec.audio_token_id)
  return cfg.replace(**overrides) if overrides else cfg


def randomize_(model, seed: int = 0) -> None:
  """Draw every parameter at random in place: weights ~ N(0, 0.1), norm scales ~ 1 + N(0, 0.1)."""
  import torch
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) * 0.1
      is_norm_scale = "norm" in name and name.endswith("weight")
      p.copy_((1.0 + noise) if is_norm_scale else noise)


def build_hf_model(spec: HFSpec, seed: int = 0):
  """A random `Qwen2AudioForConditionalGeneration` or, for an OmniSpec,
  `Qwen2_5OmniThinkerForConditionalGeneration` (float32, eager attention, eval mode)."""
  import torch
  from transformers import Qwen2_5OmniThinkerForConditionalGeneration, Qwen2AudioForConditionalGeneration
  torch.manual_seed(seed)
  cls = (Qwen2_5OmniThinkerForConditionalGeneration if isinstance(spec, OmniSpec)
         else Qwen2AudioForConditionalGeneration)
  model = cls(spec.hf_config())
  randomize_(model, seed)
  return model.eval()


def build_hf_checkpoint(directory: str | os.PathLike, spec: HFSpec, seed: int = 0,
                        **save_kwargs) -> tuple[pathlib.Path, object]:
  """Build a random model and `save_pretrained` it (safetensors) into `directory`."""
  path = pathlib.Path(directory)
  model = build_hf_model(spec, seed)
  model.save_pretrained(path, **save_kwargs)
  return path, model


def audio_tokens(feature_length: int) -> int:
  """HF's count: (L - 1) // 2 + 1 after the conv stem, then (n - 2) // 2 + 1 after pooling."""
  return ((feature_length - 1) // 2 + 1 - 2) // 2 + 1


def make_batch(spec: HFSpec, feature_lengths, text_lengths, seed: int = 0,
               with_audio: bool = True, total_length: int | None = None) -> dict[str, np.ndarray]:
  """A left-padded batch: row i = [pad..., text_a, <AUDIO> x n_i, text_b].

  feature_lengths[i]: valid frames of clip i (<= feature_frames); text_lengths[i]: total text
  tokens around the clip (>= 2); total_length: pad every row on the left to this length (fixed
  shapes let tests reuse one compiled forward). Returns numpy input_ids int64[B, T], attention_mask
  int64[B, T], input_features f32[B, n_mels, feature_frames], feature_attention_mask int64[B, F].
  """
  rng = np.random.default_rng(seed)
  n_audio = [audio_tokens(l) if with_audio else 0 for l in feature_lengths]
  rows = []
  for n, t in zip(n_audio, text_lengths):
    text = rng.integers(0, spec.audio_token_id, size=t)  # never the audio id
    split = max(1, t // 2)
    rows.append(np.concatenate([text[:split], np.full(n, spec.audio_token_id), text[split:]]))
  total = max(len(r) for r in rows)
  if total_length is not None:
    if total_length < total:
      raise ValueError(f"make_batch: rows need {total} tokens > total_length={total_length}")
    total = total_length
  input_ids = np.zeros((len(rows), total), np.int64)
  attention_mask = np.zeros_like(input_ids)
  for i, r in enumerate(rows):
    input_ids[i, total - len(r):] = r
    attention_mask[i, total - len(r):] = 1
  f = spec.feature_frames
  feats = rng.normal(size=(len(rows), spec.num_mel_bins, f)).astype(np.float32)
  fmask = (np.arange(f)[None, :] < np.asarray(feature_lengths)[:, None]).astype(np.int64)
  feats = feats * fmask[:, None, :] - 0.5 * (1 - fmask[:, None, :])  # padded frames: constant
  return dict(input_ids=input_ids, attention_mask=attention_mask, input_features=feats,
              feature_attention_mask=fmask)


def position_ids(attention_mask: np.ndarray) -> np.ndarray:
  """transformers `generate`'s positions: cumsum(mask) - 1, 0 on padding."""
  pos = np.cumsum(attention_mask, axis=-1) - 1
  return np.where(attention_mask > 0, pos, 0)


@functools.cache
def _jitted_forward():
  from flax import nnx
  return nnx.jit(lambda model, ids, feats, fmask, mask, pos: model(ids, feats, fmask, mask, pos))


def jax_forward(model, batch: dict[str, np.ndarray], positions: np.ndarray | None = None) -> np.ndarray:
  """Logits np.float32[B, T, V] of an AudioLM through one jitted forward (compiled per shape).

  Without audio in the batch, every row gets an empty clip (feature length 0, no placeholders),
  which the model treats as text only. positions default to `position_ids(attention_mask)`.
  """
  import jax.numpy as jnp
  feats, fmask = batch.get("input_features"), batch.get("feature_attention_mask")
  if feats is None:
    cfg, b = model.config.audio, len(batch["input_ids"])
    feats = np.zeros((b, cfg.num_mel_bins, 2 * cfg.max_source_positions), np.float32)
    fmask = np.zeros((b, 2 * cfg.max_source_positions), np.int64)
  pos = position_ids(batch["attention_mask"]) if positions is None else positions
  out = _jitted_forward()(model, *(jnp.asarray(x) for x in (
      batch["input_ids"], feats, fmask, batch["attention_mask"], pos)))
  return np.asarray(out)


def hf_forward(model, batch: dict[str, np.ndarray], with_positions: bool = True) -> np.ndarray:
  """Logits np.float32[B, T, V] of a transformers model on a `make_batch` batch."""
  import torch
  kwargs = dict(input_ids=torch.from_numpy(batch["input_ids"]),
                attention_mask=torch.from_numpy(batch["attention_mask"]))
  if batch.get("input_features") is not None:
    kwargs.update(input_features=torch.from_numpy(batch["input_features"]),
                  feature_attention_mask=torch.from_numpy(batch["feature_attention_mask"]))
  if with_positions:
    kwargs["position_ids"] = torch.from_numpy(position_ids(batch["attention_mask"]))
  with torch.no_grad():
    return model(**kwargs).logits.float().numpy()


def random_model(cfg, seed: int = 0, scale: float = 0.1):
  """An AudioLM with every parameter drawn on the host: N(0, scale), norm scales 1 + N(0, scale).

  Built from abstract shapes (no initializer runs, nothing to compile). Fresh models start at
  N(0, 0.02) with unit norms, so their logits barely move; random weights make cache and
  sharding comparisons meaningful.
  """
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from cesar_jax.models import AudioLM
  graphdef, state = nnx.split(nnx.eval_shape(lambda: AudioLM(cfg, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(seed)
  def draw(path, x):
    noise = scale * rng.standard_normal(x.shape, dtype=np.float32)
    is_scale = getattr(path[-1], "key", None) == "scale" or (
        len(path) > 1 and getattr(path[-2], "key", None) == "scale")
    return jnp.asarray((1.0 + noise) if is_scale else noise, dtype=x.dtype)
  return nnx.merge(graphdef, jax.tree.map_with_path(draw, state))
