"""Qwen2-Audio's Whisper-style audio encoder in Flax NNX (transformers `Qwen2AudioEncoder`).

  features f32[B, n_mels, T] --conv1(k3)+GELU--> --conv2(k3, stride 2)+GELU--> [B, T/2, D]
  + positions (table of max_source_positions rows, sinusoids at init, loaded from checkpoints)
  --> pre-LN transformer layers (no bias on k_proj), keys past each clip's length masked
  --> average pooling (2, stride 2) --> LayerNorm --> [B, T/4, D]

Lengths follow HF: with L valid feature frames (from `feature_attention_mask`), the conv stem
keeps `(L - 1) // 2 + 1` positions (the attention keys kept) and pooling leaves
`(L - 2) // 2 + 1` of those: the number of audio tokens (`num_audio_tokens`).

HF requires exactly T = 2 * max_source_positions frames (30 s for the 7B). We accept any even
T <= 2 * max_source_positions (positions sliced to T/2), which gives the same result as HF for
T = 2 * max_source_positions and lets short clips skip most of the padding.

Parameters carry logical axis names (see cesar_jax/parallel/mesh.py). `embed_positions` is a
frozen buffer in HF (`requires_grad_(False)`); here it is an `nnx.Param` so checkpoints and
sharding treat it like any weight: use `audio_lm.TRAINABLE` as the optimizer's `wrt` filter
to keep it frozen as HF does. `param_meta`, `dense` and `layer_norm` are the layer builders
shared with decoder.py.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from cesar_jax.models import audio_tokens
from cesar_jax.models import remat as remat_lib
from cesar_jax.models import stack
from cesar_jax.models.config import AudioEncoderConfig
from cesar_jax.parallel.mesh import constrain, target_platform

# HF's `_init_weights` draws weights from N(0, initializer_range=0.02).
INIT_STD = 0.02


def param_meta(*names: str | None) -> dict:
  """Variable metadata carrying logical axis names; not sharded at creation (mesh.py does it)."""
  return {"out_sharding": tuple(names), "eager_sharding": False}


def flat_tokens() -> bool:
  """Whether matmuls over tokens flatten them to 2-D first: on XLA:CPU only (see `Dense`)."""
  return target_platform() == "cpu"


class Dense(nnx.Linear):
  """`nnx.Linear`; on CPU applied to the tokens flattened to 2-D ([..., in] -> [N, in]).

  Same values and parameters either way. Why: XLA:CPU lowers the weight gradient of a 3-D
  [B, T, in] contraction with a transposing copy of the [B, T, out] cotangent before its dot,
  and calls the matmul directly on 2-D operands: 1.7x faster forward + backward for a
  4-layer SwiGLU MLP on 512 tokens (hidden 256, ffn 1024), 20-25% off the GRPO update of
  `benchmarks/grpo_step.py`, on this 2-core CPU. Not on TPU: there the reshape is a relayout
  (a [N, 1, E] decode step's tiles), and the compiled Qwen2-Audio-7B prefill held 0.11 GiB
  more per chip at 2 layers with it.
  """

  def __call__(self, inputs: jax.Array) -> jax.Array:
    if inputs.ndim <= 2 or not flat_tokens():
      return super().__call__(inputs)
    out = super().__call__(inputs.reshape(-1, inputs.shape[-1]))
    return out.reshape(*inputs.shape[:-1], out.shape[-1])


def dense(in_features: int, out_features: int, names: tuple[str | None, str | None], *,
          use_bias: bool, dtype, param_dtype, rngs: nnx.Rngs) -> Dense:
  """A `Dense` (kernel [in, out]) with logical axis names on kernel and bias."""
  return Dense(
      in_features, out_features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
      kernel_init=nnx.initializers.normal(INIT_STD), kernel_metadata=param_meta(*names),
      bias_metadata=param_meta(names[1]), rngs=rngs)


def layer_norm(features: int, eps: float, *, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
  """torch.nn.LayerNorm semantics: two-pass variance, scale and bias."""
  return nnx.LayerNorm(features, epsilon=eps, use_fast_variance=False, dtype=dtype,
                       param_dtype=param_dtype, scale_metadata=param_meta("norm"),
                       bias_metadata=param_meta("norm"), rngs=rngs)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> jax.Array:
  """Whisper's positional table f32[length, channels]: sin on the first half, cos on the second."""
  inc = math.log(max_timescale) / (channels // 2 - 1)
  inv = jnp.exp(-inc * jnp.arange(channels // 2, dtype=jnp.float32))
  t = jnp.arange(length, dtype=jnp.float32)[:, None] * inv[None, :]
  return jnp.concatenate([jnp.sin(t), jnp.cos(t)], axis=1)


def conv_output_lengths(feature_lengths: jax.Array) -> jax.Array:
  """Positions after the stride-2 conv stem: (L - 1) // 2 + 1 (HF `_get_feat_extract_output_lengths`)."""
  return (feature_lengths - 1) // 2 + 1


def num_audio_tokens(feature_lengths: jax.Array) -> jax.Array:
  """Audio tokens (placeholders) a Qwen2-Audio clip of L feature frames yields: conv stride then
  pooling. The rule of any architecture: `AudioLMConfig.num_audio_tokens` (audio_tokens.py)."""
  return audio_tokens.qwen2_audio(feature_lengths)


class EncoderAttention(nnx.Module):
  """Bidirectional multi-head attention; q scaled before the product as HF does; k_proj unbiased."""

  def __init__(self, cfg: AudioEncoderConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    d, self.num_heads = cfg.d_model, cfg.encoder_attention_heads
    self.head_dim = d // self.num_heads
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.q_proj = dense(d, d, ("embed", "heads"), use_bias=True, **kw)
    self.k_proj = dense(d, d, ("embed", "heads"), use_bias=False, **kw)
    self.v_proj = dense(d, d, ("embed", "heads"), use_bias=True, **kw)
    self.out_proj = dense(d, d, ("heads", "embed"), use_bias=True, **kw)

  def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
    """x: [B, S, D]; key_mask: bool[B, S] (False = padding key). Returns [B, S, D]."""
    b, s, _ = x.shape
    shape = (b, s, self.num_heads, self.head_dim)
    q = (self.q_proj(x) * self.head_dim**-0.5).reshape(shape)
    k = self.k_proj(x).reshape(shape)
    v = self.v_proj(x).reshape(shape)
    out = jax.nn.dot_product_attention(q, k, v, mask=key_mask[:, None, None, :], scale=1.0)
    return self.out_proj(out.reshape(b, s, -1))


class EncoderLayer(nnx.Module):
  """Pre-LN block: x + attn(LN(x)); x + fc2(gelu(fc1(LN(x))))."""

  def __init__(self, cfg: AudioEncoderConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    d, kw = cfg.d_model, dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.self_attn = EncoderAttention(cfg, **kw)
    self.self_attn_layer_norm = layer_norm(d, cfg.layer_norm_eps, **kw)
    self.fc1 = dense(d, cfg.encoder_ffn_dim, ("embed", "mlp"), use_bias=True, **kw)
    self.fc2 = dense(cfg.encoder_ffn_dim, d, ("mlp", "embed"), use_bias=True, **kw)
    self.final_layer_norm = layer_norm(d, cfg.layer_norm_eps, **kw)

  def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
    x = x + self.self_attn(self.self_attn_layer_norm(x), key_mask)
    h = jax.nn.gelu(self.fc1(self.final_layer_norm(x)), approximate=False)
    return x + self.fc2(h)


def encoder_layers(cfg: AudioEncoderConfig, *, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.Module:
  """The `cfg.encoder_layers` EncoderLayers as one stack (models/stack.py)."""
  return stack.create(lambda r: EncoderLayer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=r),
                      cfg.encoder_layers, rngs)


def run_layers(layers: nnx.Module, x: jax.Array, key_mask: jax.Array, remat: str) -> jax.Array:
  """The encoder stack over x [B, S, D] (batch-sharded residual), keys under `key_mask`."""
  def body(layer, x, _):
    return constrain(layer(x, key_mask), ("batch", None, None)), None

  return stack.scan(layers, body, x, remat=remat)[0]


class AudioEncoder(nnx.Module):
  """`Qwen2AudioEncoder`: log-mel features -> audio hidden states [B, T/4, d_model]."""

  def __init__(self, cfg: AudioEncoderConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
               remat: str = "none", rngs: nnx.Rngs):
    self.config = cfg
    self.dtype = dtype
    remat_lib.check_policy(remat, "AudioEncoder remat")
    self.remat = remat  # policy of the layers under differentiation (models/remat.py)
    d, kw = cfg.d_model, dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    conv = lambda cin, stride: nnx.Conv(  # noqa: E731
        cin, d, kernel_size=3, strides=stride, padding=((1, 1),), dtype=dtype,
        param_dtype=param_dtype, kernel_init=nnx.initializers.normal(INIT_STD),
        kernel_metadata=param_meta(None, None, "embed"), bias_metadata=param_meta("embed"),
        rngs=rngs)
    self.conv1 = conv(cfg.num_mel_bins, 1)
    self.conv2 = conv(d, 2)
    self.embed_positions = nnx.Param(
        sinusoids(cfg.max_source_positions, d).astype(param_dtype), **param_meta(None, "embed"))
    self.layers = encoder_layers(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.layer_norm = layer_norm(d, cfg.layer_norm_eps, **kw)

  def __call__(self, input_features: jax.Array, feature_attention_mask: jax.Array) -> jax.Array:
    """input_features: f[B, n_mels, T] (T even, <= 2 * max_source_positions);
    feature_attention_mask: int[B, T] (1 = real frame; only its row sums are used, as in HF).
    Returns f[B, T//4, d_model] in the compute dtype; rows past `num_audio_tokens` are padding.
    """
    b, n_mels, t = input_features.shape
    max_t = 2 * self.config.max_source_positions
    if n_mels != self.config.num_mel_bins:
      raise ValueError(f"AudioEncoder: input_features has {n_mels} mel bins, the config expects "
                       f"num_mel_bins={self.config.num_mel_bins}")
    if t % 2 or t > max_t:
      raise ValueError(f"AudioEncoder: input_features has {t} frames; need an even number "
                       f"<= 2 * max_source_positions = {max_t}")
    x = jnp.swapaxes(input_features, 1, 2).astype(self.dtype)  # [B, T, n_mels]
    x = jax.nn.gelu(self.conv1(x), approximate=False)
    x = jax.nn.gelu(self.conv2(x), approximate=False)  # [B, T/2, D]
    x = x + self.embed_positions[: t // 2].astype(x.dtype)
    lengths = conv_output_lengths(jnp.sum(feature_attention_mask, axis=-1))
    key_mask = jnp.arange(t // 2)[None, :] < lengths[:, None]  # bool[B, T/2]
    x = run_layers(self.layers, constrain(x, ("batch", None, None)), key_mask, self.remat)
    n = t // 4  # AvgPool1d(2, stride=2) floors an odd length.
    x = x[:, : 2 * n].reshape(b, n, 2, -1).mean(axis=2)
    return self.layer_norm(x)
