"""AudioLM: Qwen2-Audio and the Qwen2.5-Omni thinker in Flax NNX, behind one interface.

  model = AudioLM(config.preset("tiny"), rngs=nnx.Rngs(0))        # Qwen2-Audio
  model = AudioLM(config.preset("tiny_omni"), rngs=nnx.Rngs(0))   # Qwen2.5-Omni thinker
  logits = model(input_ids, input_features, feature_attention_mask, attention_mask)  # f32[B, T, V]

Prompts already hold one `<|AUDIO|>` placeholder per audio token (the tokenizer's
`encode_prompt(text, num_audio_tokens(L))`), as transformers' processor does. Audio embeddings
replace the placeholders in order, like HF's `masked_scatter`: the k-th placeholder of the batch
(row-major) receives the k-th valid audio token of the clips taken in order, the valid tokens of
clip i being its first `num_audio_tokens(L_i)` encoder outputs. So one clip per row works with
any padding, rows without audio work, and several clips per row work. A placeholder count that
differs from the audio token count is a ValueError naming both numbers (checked when the inputs
are concrete; inside `jax.jit` the inputs are tracers and the caller owns the check, e.g. with
`check_audio_placeholders` on the host batch).

Pieces for the sampler and the trainer (all static-shape, jit-friendly):
  audio_embeds, audio_lengths = model.encode_audio(input_features, feature_attention_mask)
  embeds = model.embed(input_ids, audio_embeds, audio_lengths)        # [B, T, E]
  hidden = model.language_model(embeds, attention_mask, positions)    # [B, T, E]
  logits = model.language_model.logits(hidden)                        # f32[B, T, V]
  cache = model.init_cache(batch_size, max_length)                    # decoder.KVCache
  logits, cache = model.prefill(input_ids, attention_mask, cache, input_features,
                                feature_attention_mask)               # f32[B, V] (last slot)
  logits, cache = model.decode_step(tokens, cache)                    # f32[B, V]

Positions: see decoder.py (derived from the attention mask; HF's Qwen2-Audio forward without
`position_ids` uses 0..T-1, identical when there is no left padding).

Architectures (`config.arch`; everything else is shared):
  qwen2_audio   `audio_tower` = audio_encoder.AudioEncoder (Whisper, 30 s window) and
                `multi_modal_projector` (linear) to the text width (transformers
                `Qwen2AudioForConditionalGeneration`).
  qwen2_5_omni  `audio_tower` = omni_audio_encoder.OmniAudioEncoder (chunks of 2 * n_window,
                ln_post + proj to the text width inside the tower), no projector
                (`Qwen2_5OmniThinkerForConditionalGeneration`). Its decoder uses M-RoPE; with
                audio and text only, transformers' `get_rope_index` gives three equal rows
                `cumsum(attention_mask) - 1` (1 on padding) and `rope_deltas` = 0 for rows with
                two or more real tokens, and M-RoPE of three equal rows is 1D RoPE: exactly the
                shared decoder's positions, in the forward, prefill and decode alike
                (tests/models/test_omni_parity.py holds the two equal).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cesar_jax.models import decoder as decoder_lib
from cesar_jax.models.audio_encoder import AudioEncoder, dense, num_audio_tokens
from cesar_jax.models.config import AudioLMConfig
from cesar_jax.models.omni_audio_encoder import OmniAudioEncoder

__all__ = ["AudioLM", "TRAINABLE", "num_audio_tokens", "splice_audio", "check_audio_placeholders"]

# Optimizer filter matching HF's trainable set: Qwen2-Audio's position table is frozen there;
# the Omni tower's `audio_bos_eos_token` is never read by the forward.
TRAINABLE = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("embed_positions")),
                    nnx.Not(nnx.PathContains("audio_bos_eos_token")))


def splice_audio(text_embeds: jax.Array, is_audio: jax.Array, audio_embeds: jax.Array,
                 audio_lengths: jax.Array) -> jax.Array:
  """HF's `masked_scatter` of valid audio tokens into the placeholder slots, static shapes.

  text_embeds: [B, T, E]; is_audio: bool[B, T]; audio_embeds: [N, A, E]; audio_lengths:
  int[N] (valid tokens per clip). Placeholders beyond the audio supply are left untouched.
  """
  b, t, e = text_embeds.shape
  n, a, _ = audio_embeds.shape
  flat = is_audio.reshape(-1)
  rank = jnp.cumsum(flat.astype(jnp.int32)) - 1          # k for the k-th placeholder
  ends = jnp.cumsum(audio_lengths.astype(jnp.int32))     # [N]
  clip = jnp.clip(jnp.searchsorted(ends, rank, side="right"), 0, n - 1)
  within = jnp.clip(rank - (ends - audio_lengths)[clip], 0, a - 1)
  gathered = audio_embeds.reshape(n * a, e)[clip * a + within].astype(text_embeds.dtype)
  use = flat & (rank < ends[-1])
  return jnp.where(use[:, None], gathered, text_embeds.reshape(b * t, e)).reshape(b, t, e)


def check_audio_placeholders(input_ids, feature_attention_mask, audio_token_id: int,
                             tokens_fn=num_audio_tokens) -> None:
  """Host-side check: placeholder count == audio token count; raises a ValueError naming both.
  tokens_fn: the architecture's token count (`AudioLMConfig.num_audio_tokens`)."""
  ids = np.asarray(input_ids)
  lengths = np.asarray(feature_attention_mask).sum(-1)
  n_placeholders = int((ids == audio_token_id).sum())
  per_clip = np.asarray(tokens_fn(lengths))
  if n_placeholders != int(per_clip.sum()):
    raise ValueError(
        f"audio placeholders and audio tokens do not match: input_ids hold {n_placeholders} "
        f"<|AUDIO|> tokens (id {audio_token_id}; per row {(ids == audio_token_id).sum(-1).tolist()}) "
        f"but the features give {int(per_clip.sum())} audio tokens (per clip {per_clip.tolist()} "
        "from feature_attention_mask lengths "
        f"{lengths.tolist()}); use num_audio_tokens(feature_lengths) placeholders per clip")


def _is_concrete(*xs) -> bool:
  return not any(isinstance(x, jax.core.Tracer) for x in xs)


class Projector(nnx.Module):
  """`Qwen2AudioMultiModalProjector`: one biased linear layer d_model -> hidden_size."""

  def __init__(self, d_in: int, d_out: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.linear = dense(d_in, d_out, (None, "embed"), use_bias=True, dtype=dtype,
                        param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear(x)


class AudioLM(nnx.Module):
  """Qwen2-Audio or the Qwen2.5-Omni thinker (`config.arch`). Submodules are named as in the HF
  checkpoints: `audio_tower`, `multi_modal_projector` (Qwen2-Audio; None for Omni),
  `language_model` (see checkpoints/hf.py)."""

  def __init__(self, config: AudioLMConfig, *, rngs: nnx.Rngs | None = None):
    rngs = nnx.Rngs(0) if rngs is None else rngs
    self.config = config
    kw = dict(dtype=config.compute_dtype, param_dtype=config.params_dtype, rngs=rngs)
    if config.arch == "qwen2_5_omni":
      self.audio_tower = OmniAudioEncoder(config.audio, config.text.hidden_size,
                                          remat=config.remat, **kw)
      self.multi_modal_projector = None
    else:
      self.audio_tower = AudioEncoder(config.audio, remat=config.remat, **kw)
      self.multi_modal_projector = Projector(config.audio.d_model, config.text.hidden_size, **kw)
    self.language_model = decoder_lib.Decoder(config.text, remat=config.remat, **kw)

  def encode_audio(self, input_features: jax.Array,
                   feature_attention_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """input_features: f[N, n_mels, T_f]; feature_attention_mask: int[N, T_f].
    Returns (audio_embeds [N, A, hidden] in text space, audio_lengths int32[N]); A = T_f // 4
    for Qwen2-Audio, ceil(T_f / (2 n_window)) * n_window // 2 for Omni."""
    hidden = self.audio_tower(input_features, feature_attention_mask)
    lengths = self.config.num_audio_tokens(
        jnp.sum(feature_attention_mask, axis=-1)).astype(jnp.int32)
    if self.multi_modal_projector is not None:
      hidden = self.multi_modal_projector(hidden)
    return hidden, lengths

  def embed(self, input_ids: jax.Array, audio_embeds: jax.Array | None = None,
            audio_lengths: jax.Array | None = None) -> jax.Array:
    """Token embeddings [B, T, E] with audio spliced at the `<|AUDIO|>` placeholders."""
    embeds = self.language_model.embed(input_ids)
    if audio_embeds is None:
      return embeds
    if _is_concrete(input_ids, audio_lengths):
      ids, lengths = np.asarray(input_ids), np.asarray(audio_lengths)
      n_tok = int((ids == self.config.audio_token_id).sum())
      if n_tok != int(lengths.sum()):
        raise ValueError(f"audio placeholders and audio tokens do not match: input_ids hold "
                         f"{n_tok} <|AUDIO|> tokens (id {self.config.audio_token_id}) but the "
                         f"audio gives {int(lengths.sum())} tokens (per clip {lengths.tolist()})")
    return splice_audio(embeds, input_ids == self.config.audio_token_id, audio_embeds, audio_lengths)

  def embed_inputs(self, input_ids, input_features=None, feature_attention_mask=None) -> jax.Array:
    """Encode the audio (if given) and splice it: [B, T, E]. Checks the placeholder count
    before encoding when the inputs are concrete."""
    if input_features is None:
      return self.embed(input_ids)
    if feature_attention_mask is None:
      raise ValueError("input_features given without feature_attention_mask")
    if _is_concrete(input_ids, feature_attention_mask):
      check_audio_placeholders(input_ids, feature_attention_mask, self.config.audio_token_id,
                               self.config.num_audio_tokens)
    audio_embeds, audio_lengths = self.encode_audio(input_features, feature_attention_mask)
    return self.embed(input_ids, audio_embeds, audio_lengths)

  def __call__(self, input_ids: jax.Array, input_features: jax.Array | None = None,
               feature_attention_mask: jax.Array | None = None,
               attention_mask: jax.Array | None = None,
               positions: jax.Array | None = None) -> jax.Array:
    """input_ids: int[B, T] (left-padded prompts, placeholders expanded); input_features:
    f[N, n_mels, T_f]; feature_attention_mask: int[N, T_f]; attention_mask: int[B, T].
    Returns f32 logits [B, T, V]."""
    embeds = self.embed_inputs(input_ids, input_features, feature_attention_mask)
    hidden = self.language_model(embeds, attention_mask, positions)
    return self.language_model.logits(hidden)

  # KV-cache path (see decoder.py).

  def init_cache(self, batch_size: int, max_length: int, dtype=None) -> decoder_lib.KVCache:
    """An empty KV cache; dtype defaults to the compute dtype."""
    return decoder_lib.init_cache(self.config.text, batch_size, max_length,
                                  self.config.compute_dtype if dtype is None else dtype)

  def prefill(self, input_ids: jax.Array, attention_mask: jax.Array, cache: decoder_lib.KVCache,
              input_features: jax.Array | None = None,
              feature_attention_mask: jax.Array | None = None, *,
              all_logits: bool = False) -> tuple[jax.Array, decoder_lib.KVCache]:
    """Run left-padded prompts [B, T] into a fresh cache. Returns (logits f32[B, V] of the last
    slot, or f32[B, T, V] with `all_logits`, cache)."""
    embeds = self.embed_inputs(input_ids, input_features, feature_attention_mask)
    hidden, cache = self.language_model.prefill(embeds, attention_mask, cache)
    hidden = hidden if all_logits else hidden[:, -1]
    return self.language_model.logits(hidden), cache

  def decode_step(self, tokens: jax.Array, cache: decoder_lib.KVCache,
                  valid: jax.Array | None = None) -> tuple[jax.Array, decoder_lib.KVCache]:
    """One token per row: tokens int[B]; valid bool[B] (False leaves the slot masked).
    Returns (logits f32[B, V], cache)."""
    embeds = self.language_model.embed(tokens[:, None])
    mask = jnp.ones(tokens.shape, bool) if valid is None else valid
    hidden, cache = self.language_model.extend(embeds, mask[:, None], cache)
    return self.language_model.logits(hidden[:, 0]), cache
