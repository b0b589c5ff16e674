"""The Qwen2.5-Omni thinker's audio encoder in Flax NNX (transformers `Qwen2_5OmniAudioEncoder`).

HF works on the concatenated valid frames of all clips; this is the same computation on padded
batches with static shapes:

  features f[N, n_mels, T], feature mask int[N, T]
    --> valid frames moved to the front of each row (HF selects `feature_attention_mask` frames),
        zeros after them (HF's `pad_sequence` pads chunks with zeros)
    --> chunks of W = 2 * n_window frames: [N * C, W, n_mels], C = ceil(T / W) from the padded
        width (static); chunk c of a clip holds clip(L - c * W, 0, W) valid frames
    --> per chunk: conv1(k3) + GELU, frames past the chunk's length zeroed, conv2(k3, stride 2)
        + GELU --> [N * C, n_window, D] + sinusoidal positions 0..n_window-1 (computed, restart
        in every chunk)
    --> pre-LN transformer layers, attention within each chunk over its valid positions
    --> chunks joined back per clip: [N, C * n_window, D]; a clip's valid positions are its first
        (L - 1) // 2 + 1 (every chunk but the last is full)
    --> average pooling (2, stride 2) over the whole clip --> ln_post --> proj (biased,
        d_model -> output_dim = the text width): f[N, C * n_window // 2, output_dim]

The first `num_audio_tokens(L)` = ((L - 1) // 2 + 1 - 2) // 2 + 1 rows of each clip are its audio
tokens; the rest is padding. Clips may be longer than 30 s (no position table limit beyond
n_window <= max_source_positions). `audio_bos_eos_token` is a parameter of the HF checkpoint
that the forward never reads (as in transformers); it is kept so checkpoints round-trip and
frozen by `audio_lm.TRAINABLE`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cesar_jax.models import remat as remat_lib
from cesar_jax.models.audio_encoder import (INIT_STD, dense, encoder_layers, layer_norm,
                                            param_meta, run_layers, sinusoids)
from cesar_jax.models.config import AudioEncoderConfig
from cesar_jax.parallel.mesh import constrain


def compact_valid_frames(features: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Valid frames first, in order, zeros after: (f[N, n_mels, T], lengths int32[N]).

  features: f[N, n_mels, T]; mask: int/bool[N, T]. A prefix mask (the usual right padding)
  leaves the frames where they are.
  """
  valid = mask.astype(bool)
  order = jnp.argsort(~valid, axis=-1, stable=True)  # valid frames first, stable
  lengths = jnp.sum(valid, axis=-1, dtype=jnp.int32)
  moved = jnp.take_along_axis(features, order[:, None, :], axis=2)
  keep = jnp.arange(features.shape[-1])[None, :] < lengths[:, None]
  return jnp.where(keep[:, None, :], moved, 0).astype(features.dtype), lengths


class OmniAudioEncoder(nnx.Module):
  """`Qwen2_5OmniAudioEncoder`: log-mel features -> audio embeddings in the text width."""

  def __init__(self, cfg: AudioEncoderConfig, output_dim: int, *, dtype=jnp.float32,
               param_dtype=jnp.float32, remat: str = "none", rngs: nnx.Rngs):
    if cfg.n_window > cfg.max_source_positions:
      raise ValueError(f"AudioEncoderConfig: n_window={cfg.n_window} exceeds "
                       f"max_source_positions={cfg.max_source_positions} (positions per chunk)")
    self.config = cfg
    self.dtype = dtype
    remat_lib.check_policy(remat, "OmniAudioEncoder remat")
    self.remat = remat  # policy of the layers under differentiation (models/remat.py)
    d, kw = cfg.d_model, dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    conv = lambda cin, stride: nnx.Conv(  # noqa: E731
        cin, d, kernel_size=3, strides=stride, padding=((1, 1),), dtype=dtype,
        param_dtype=param_dtype, kernel_init=nnx.initializers.normal(INIT_STD),
        kernel_metadata=param_meta(None, None, "embed"), bias_metadata=param_meta("embed"),
        rngs=rngs)
    self.conv1 = conv(cfg.num_mel_bins, 1)
    self.conv2 = conv(d, 2)
    self.layers = encoder_layers(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.ln_post = layer_norm(d, cfg.layer_norm_eps, **kw)
    self.proj = dense(d, output_dim, (None, "embed"), use_bias=True, **kw)
    self.audio_bos_eos_token = nnx.Param(
        nnx.initializers.normal(INIT_STD)(rngs.params(), (2, output_dim), param_dtype),
        **param_meta(None, "embed"))

  def __call__(self, input_features: jax.Array, feature_attention_mask: jax.Array) -> jax.Array:
    """input_features: f[N, n_mels, T] (any T); feature_attention_mask: int[N, T] (1 = real
    frame). Returns f[N, ceil(T / W) * n_window // 2, output_dim] in the compute dtype."""
    n, n_mels, t = input_features.shape
    cfg = self.config
    if n_mels != cfg.num_mel_bins:
      raise ValueError(f"OmniAudioEncoder: input_features has {n_mels} mel bins, the config "
                       f"expects num_mel_bins={cfg.num_mel_bins}")
    if feature_attention_mask.shape != (n, t):
      raise ValueError(f"OmniAudioEncoder: feature_attention_mask has shape "
                       f"{feature_attention_mask.shape}, expected {(n, t)}")
    w = 2 * cfg.n_window
    c = max(1, -(-t // w))
    feats, lengths = compact_valid_frames(input_features, feature_attention_mask)
    feats = jnp.pad(feats, ((0, 0), (0, 0), (0, c * w - t)))
    x = feats.reshape(n, n_mels, c, w).transpose(0, 2, 3, 1).reshape(n * c, w, n_mels)
    chunk_len = jnp.clip(lengths[:, None] - w * jnp.arange(c)[None, :], 0, w).reshape(n * c)
    frame_ok = jnp.arange(w)[None, :] < chunk_len[:, None]  # bool[N*C, W]
    x = jax.nn.gelu(self.conv1(x.astype(self.dtype)), approximate=False)
    x = x * frame_ok[..., None].astype(x.dtype)
    x = jax.nn.gelu(self.conv2(x), approximate=False)  # [N*C, S, D], S = n_window
    s = x.shape[1]
    x = x + sinusoids(s, cfg.d_model).astype(x.dtype)
    positions_ok = jnp.arange(s)[None, :] < ((chunk_len - 1) // 2 + 1)[:, None]
    # An empty chunk (past its clip's end) attends to its first slot instead of nothing, so no
    # NaN appears even in rows that are thrown away (their gradients stay finite).
    key_mask = positions_ok | (jnp.arange(s) == 0)[None, :]
    x = run_layers(self.layers, constrain(x, ("batch", None, None)), key_mask, self.remat)
    x = x.reshape(n, c * s, -1)
    p = (c * s) // 2  # AvgPool1d(2, stride=2) floors an odd length.
    x = x[:, : 2 * p].reshape(n, p, 2, -1).mean(axis=2)
    return self.proj(self.ln_post(x))
