"""Qwen2 decoder in Flax NNX (transformers `Qwen2Model` + LM head) with a static-shape KV cache.

Architecture (exactly HF's): token embedding; per layer x + attn(RMSNorm(x)), x + mlp(RMSNorm(x))
with GQA attention (q/k/v biased, o unbiased, RoPE with `rope_theta`, scale head_dim**-0.5) and
a SwiGLU MLP (down(silu(gate(x)) * up(x))); final RMSNorm (computed in float32, as HF); LM head
tied to the embedding or separate. Logits are float32 whatever the compute dtype.

Positions. Padding is on the left for prompts. A token's RoPE position is the number of real
tokens before it (`cumsum(mask) - 1`, 0 on padding), which is what `generate` computes in
transformers; HF's plain forward with `position_ids=None` uses 0..T-1 instead, which equals ours
whenever there is no left padding (pass `positions` to override).

KV cache API (everything static-shape, traced indices, no Python loop over tokens):

  cache = init_cache(cfg, batch_size=B, max_length=S, dtype=jnp.bfloat16)   # KVCache of zeros
  hidden, cache = decoder.prefill(embeds[B, T], attention_mask[B, T], cache)  # fresh cache only
  hidden, cache = decoder.extend(embeds[B, 1], attention_mask[B, 1], cache)   # one decode step
  logits = decoder.logits(hidden[:, -1])                                       # f32[B, V]

Layers are one stacked module run under `jax.lax.scan` (models/stack.py): compiled once,
whatever the depth. `KVCache` is a pytree (`flax.struct.dataclass`): `k`, `v`:
[L, B, H_kv, S, D] (layer first, as the stacked parameters);
`mask`: bool[B, S] (slot holds a real token); `next_position`: int32[B] (RoPE position of the
next real token per row); `index`: int32[] (next slot to write, shared by all rows). `prefill`
attends among the T prompt tokens only and writes slots [0, T); `extend` writes T new tokens
at `index` (a traced scalar, `lax.dynamic_update_slice`) and attends over all S slots under
the cache mask and causality. It works inside `jax.lax.while_loop` and the cache may be
donated to a jitted step. The caller sizes S >= prompt length + new tokens: writes past the
end are clamped by XLA onto the last slots, silently.

Groups (GRPO's G samples of one prompt) share one prompt cache:

  cache = share_prefix(prompt_cache, group=G, max_new_tokens=M)  # B prompts -> B * G rows
  hidden, cache = decoder.extend(embeds[B * G, 1], mask[B * G, 1], cache)

`cache.prefix` (`PrefixKV`, [L, B, H_kv, P, D]) holds the prompts once; the B * G rows own only
their M new slots, and attention reads both in one softmax (`grouped_attention`). The training
forward of groups (`Decoder.shared_prefix`) uses the same attention.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from cesar_jax.models.audio_encoder import INIT_STD, dense, flat_tokens, param_meta
from cesar_jax.models import remat as remat_lib
from cesar_jax.models import stack
from cesar_jax.models.config import DecoderConfig
from cesar_jax.parallel.mesh import constrain

# Residual stream [B, T, E]: batch-sharded, width replicated (a no-op without a mesh context).
RESIDUAL = ("batch", None, None)


@flax.struct.dataclass
class PrefixKV:
  """Keys and values of B prompts, read by the G = N / B rows of each group (see `share_prefix`).

  k, v: [L, B, H_kv, P, D]; mask: bool[B, P] (slot holds a real token).
  """
  k: jax.Array
  v: jax.Array
  mask: jax.Array


@flax.struct.dataclass
class KVCache:
  """Decoder KV cache; see the module docstring. k, v: [L, N, H_kv, S, D]: the rows' own
  slots; `prefix`: a shared prompt part (None: the own slots hold everything)."""
  k: jax.Array
  v: jax.Array
  mask: jax.Array           # bool[N, S]
  next_position: jax.Array  # int32[N]
  index: jax.Array          # int32[]
  prefix: PrefixKV | None = None

  @property
  def max_length(self) -> int:
    """Own slots per row (the shared prefix's slots not counted)."""
    return self.mask.shape[1]


def init_cache(cfg: DecoderConfig, batch_size: int, max_length: int,
               dtype=jnp.float32) -> KVCache:
  """An empty cache for `batch_size` rows of `max_length` slots ([L, B, H_kv, S, D])."""
  shape = (cfg.num_hidden_layers, batch_size, cfg.num_key_value_heads, max_length,
           cfg.kv_head_dim)
  return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                 mask=jnp.zeros((batch_size, max_length), bool),
                 next_position=jnp.zeros((batch_size,), jnp.int32),
                 index=jnp.zeros((), jnp.int32))


def share_prefix(cache: KVCache, group: int, max_new_tokens: int) -> KVCache:
  """A prefilled cache of B prompts -> a cache of B * `group` rows that share them.

  The prompts' slots become the read-only `prefix` (held once per group, not `group` times);
  each row gets `max_new_tokens` empty own slots and continues at its prompt's next position.
  Rows b*G .. b*G+G-1 read prompt b. Decoding on it (`Decoder.extend`) gives the values of
  decoding on the prompt cache repeated G times, at 1/G of the prompt's cache bytes, and each
  decode step reads a prompt's keys once per group (the group folded into the queries).
  """
  if cache.prefix is not None:
    raise ValueError("share_prefix: the cache already has a shared prefix")
  b = cache.mask.shape[0]
  n = b * group
  own = _empty_like(cache, n, max_new_tokens)
  prefix = PrefixKV(k=cache.k, v=cache.v, mask=cache.mask)
  return own.replace(next_position=jnp.repeat(cache.next_position, group), prefix=prefix)


def _empty_like(cache: KVCache, batch_size: int, max_length: int) -> KVCache:
  """Empty own slots with `cache`'s layer count, heads and dtype."""
  layers, _, kv, _, d = cache.k.shape
  shape = (layers, batch_size, kv, max_length, d)
  return KVCache(k=jnp.zeros(shape, cache.k.dtype), v=jnp.zeros(shape, cache.v.dtype),
                 mask=jnp.zeros((batch_size, max_length), bool),
                 next_position=jnp.zeros((batch_size,), jnp.int32),
                 index=jnp.zeros((), jnp.int32))


def grouped_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                      prefix: tuple[jax.Array, jax.Array, jax.Array] | None,
                      scale: float) -> jax.Array:
  """Attention of N rows over their own keys and, with `prefix`, their group's shared prefix.

  q: [N, T, H, D]; k, v: [N, H_kv, S, D] (head-major, as the cache stores them: no per-step
  relayout of the cache); mask: bool[N, 1, T, S] (own slots); prefix: None or (k, v
  [B, H_kv, P, D], mask bool[B, P]) with N = B * G, rows b*G .. b*G+G-1 reading prefix b. The
  group is folded into the query dims, so a prefix's keys are read once per group. GQA as HF
  (query head j reads kv head j // (H / H_kv)). One softmax over prefix and own slots, kept
  in two parts (a shared max and normaliser, as flash attention) so no [.., P + S] score
  array is concatenated; scores and the normaliser in float32. Returns [N, T, H, D].
  """
  n, t, h, d = q.shape
  hkv, s = k.shape[1], k.shape[2]
  b = n if prefix is None else prefix[0].shape[0]
  if n % b:
    raise ValueError(f"grouped_attention: {n} rows are not a multiple of {b} prefixes")
  g, r = n // b, h // hkv
  f32, masked = jnp.float32, -0.7 * jnp.finfo(jnp.float32).max  # as jax.nn.dot_product_attention
  qg = q.reshape(b, g, t, hkv, r, d)
  own_k = k.astype(q.dtype).reshape(b, g, hkv, s, d)
  own_v = v.astype(q.dtype).reshape(b, g, hkv, s, d)
  scores = jnp.einsum("bgtkrd,bgksd->bgktrs", qg, own_k, preferred_element_type=f32) * scale
  scores = jnp.where(mask.reshape(b, g, 1, t, 1, s), scores, masked)
  top = jnp.max(scores, axis=-1)  # [b, g, k, t, r]
  if prefix is not None:  # prefix arrays are [b, k, g, ...]: the dot's batch dims (b, k) lead
    pk, pv, pmask = prefix
    scores_p = jnp.einsum("bgtkrd,bkpd->bkgtrp", qg, pk.astype(q.dtype),
                          preferred_element_type=f32) * scale
    scores_p = jnp.where(pmask[:, None, None, None, None, :], scores_p, masked)
    top = jnp.maximum(top, jnp.swapaxes(jnp.max(scores_p, axis=-1), 1, 2))
  top = jax.lax.stop_gradient(top)  # any shift gives the same softmax
  weights = jnp.exp(scores - top[..., None])
  total = jnp.sum(weights, axis=-1)
  out = jnp.einsum("bgktrs,bgksd->bgktrd", weights.astype(q.dtype), own_v,
                   preferred_element_type=f32)
  if prefix is not None:
    weights_p = jnp.exp(scores_p - jnp.swapaxes(top, 1, 2)[..., None])
    total = total + jnp.swapaxes(jnp.sum(weights_p, axis=-1), 1, 2)
    out_p = jnp.einsum("bkgtrp,bkpd->bkgtrd", weights_p.astype(q.dtype), pv.astype(q.dtype),
                       preferred_element_type=f32)
    out = out + jnp.swapaxes(out_p, 1, 2)
  out = (out / total[..., None]).astype(q.dtype)  # [b, g, k, t, r, d]
  return jnp.transpose(out, (0, 1, 3, 2, 4, 5)).reshape(n, t, h, d)


def _attention_with_prefix(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                           prefix: tuple[jax.Array, jax.Array, jax.Array],
                           scale: float) -> jax.Array:
  """`grouped_attention`'s values for the training forward (T = M tokens per row, no cache):
  q, k, v token-major [N, T, H(_kv), D], mask bool[N, 1, T, T] (own tokens), prefix head-major
  as there. The prefix keys are repeated per row and one `jax.nn.dot_product_attention` runs
  over [prefix; own]: compiled for TPU, its backward holds less than the grouped form (one
  Qwen2.5-Omni-7B layer, 2 prompts x G = 8, P = 1024, M = 320, remat, v5e:2x4: 0.21 vs
  0.31 GiB of temporaries), and the repeat's transpose sums the prefix gradients over the
  group. The decode (T = 1) is where reading the prefix once per group pays."""
  pk, pv, pmask = prefix
  group = q.shape[0] // pk.shape[0]
  def rows(x):  # [B, H_kv, P, D] -> [N, P, H_kv, D]
    return jnp.repeat(jnp.swapaxes(x, 1, 2), group, axis=0).astype(q.dtype)
  keys = jnp.concatenate([rows(pk), k], axis=1)
  values = jnp.concatenate([rows(pv), v], axis=1)
  seen = jnp.repeat(pmask, group, axis=0)[:, None, None, :]  # [N, 1, 1, P]
  full = jnp.concatenate([jnp.broadcast_to(seen, mask.shape[:3] + seen.shape[-1:]), mask], -1)
  return jax.nn.dot_product_attention(q, keys, values, mask=full, scale=scale)


def heads_first(x: jax.Array) -> jax.Array:
  """[B, T, H, D] -> [B, H, T, D] (the cache's head-major layout)."""
  return jnp.swapaxes(x, 1, 2)


def positions_from_mask(attention_mask: jax.Array, start: jax.Array | int = 0) -> jax.Array:
  """int32[B, T]: start + number of real tokens before each one; 0 on padding (HF `generate`)."""
  mask = attention_mask.astype(jnp.int32)
  pos = jnp.asarray(start, jnp.int32)[..., None] + jnp.cumsum(mask, axis=-1) - 1
  return jnp.where(mask > 0, pos, 0)


def rope_tables(positions: jax.Array, head_dim: int, theta: float, dtype) -> tuple[jax.Array, jax.Array]:
  """cos, sin [B, T, 1, head_dim] (HF default RoPE: frequencies repeated on both halves)."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
  return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x: [B, T, H, D] -> x * cos + rotate_half(x) * sin."""
  x1, x2 = jnp.split(x, 2, axis=-1)
  return x * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


class RMSNorm(nnx.Module):
  """Qwen2RMSNorm: normalise in float32, cast back, then multiply by the weight."""

  def __init__(self, dim: int, eps: float, *, param_dtype=jnp.float32):
    self.eps = eps
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype), **param_meta("norm"))

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.scale[...].astype(x.dtype) * y.astype(x.dtype)


class Attention(nnx.Module):
  """GQA self-attention with RoPE; optionally reads/writes a layer's KV cache."""

  def __init__(self, cfg: DecoderConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    e, self.n, self.kv, self.d = (cfg.hidden_size, cfg.num_attention_heads,
                                  cfg.num_key_value_heads, cfg.kv_head_dim)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.q_proj = dense(e, self.n * self.d, ("embed", "heads"), use_bias=True, **kw)
    self.k_proj = dense(e, self.kv * self.d, ("embed", "kv_heads"), use_bias=True, **kw)
    self.v_proj = dense(e, self.kv * self.d, ("embed", "kv_heads"), use_bias=True, **kw)
    self.o_proj = dense(self.n * self.d, e, ("heads", "embed"), use_bias=False, **kw)

  def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array,
               kv: tuple[jax.Array, jax.Array] | None = None, index: jax.Array | None = None,
               is_causal: bool = False, prefix: tuple[jax.Array, ...] | None = None):
    """x: [B, T, E]; mask: bool[B, 1, T or 1, S] (a key mask [B, 1, 1, S] with `is_causal`,
    which needs S = T: the attention call applies causality itself, no dense [B, 1, T, T]).
    Without `kv` or `prefix`: self-attention among the T tokens (`jax.nn.dot_product_attention`).
    With `kv` = (k, v, layer): the stacked cache arrays [L, B, H_kv, S, D] and this layer's
    index, the new keys are written at slot `index` of layer `layer` (in place: the scan
    carries the whole cache) and the rows attend over that layer's slots; with `prefix` (this
    layer's shared keys, values and mask) they also attend to their group's prefix
    (`grouped_attention`).
    Returns (out [B, T, E], (k, v) head-major: the new ones [B, H_kv, T, D] or the updated
    stacked cache arrays)."""
    b, t, _ = x.shape
    q = apply_rope(self.q_proj(x).reshape(b, t, self.n, self.d), cos, sin)
    k = apply_rope(self.k_proj(x).reshape(b, t, self.kv, self.d), cos, sin)
    v = self.v_proj(x).reshape(b, t, self.kv, self.d)
    if kv is None and prefix is None:
      out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=self.d**-0.5,
                                         is_causal=is_causal)
      return self.o_proj(out.reshape(b, t, self.n * self.d)), (heads_first(k), heads_first(v))
    if kv is None:  # the training forward of groups: T continuation tokens per row
      out = _attention_with_prefix(q, k, v, mask, prefix, self.d**-0.5)
      return self.o_proj(out.reshape(b, t, self.n * self.d)), (heads_first(k), heads_first(v))
    k_all, v_all, layer = kv
    start = (layer, 0, 0, index, 0)
    k_all = jax.lax.dynamic_update_slice(k_all, heads_first(k)[None].astype(k_all.dtype), start)
    v_all = jax.lax.dynamic_update_slice(v_all, heads_first(v)[None].astype(v_all.dtype), start)
    k = jax.lax.dynamic_index_in_dim(k_all, layer, keepdims=False)
    v = jax.lax.dynamic_index_in_dim(v_all, layer, keepdims=False)
    out = grouped_attention(q, k, v, mask, prefix, self.d**-0.5)
    return self.o_proj(out.reshape(b, t, self.n * self.d)), (k_all, v_all)


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x)), no biases."""

  def __init__(self, cfg: DecoderConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    e, m, kw = cfg.hidden_size, cfg.intermediate_size, dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.gate_proj = dense(e, m, ("embed", "mlp"), use_bias=False, **kw)
    self.up_proj = dense(e, m, ("embed", "mlp"), use_bias=False, **kw)
    self.down_proj = dense(m, e, ("mlp", "embed"), use_bias=False, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
  def __init__(self, cfg: DecoderConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.self_attn = Attention(cfg, **kw)
    self.mlp = MLP(cfg, **kw)
    self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype)
    self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype)

  def __call__(self, x, cos, sin, mask, kv=None, index=None, is_causal=False, prefix=None):
    """The residual stream keeps x's dtype (the compute dtype): float32 LoRA adapters on a
    bfloat16 base return float32 deltas, which would otherwise promote it (and a scan's carry
    must keep its dtype)."""
    h, kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, kv, index, is_causal, prefix)
    x = x + h.astype(x.dtype)
    return x + self.mlp(self.post_attention_layernorm(x)).astype(x.dtype), kv


class Decoder(nnx.Module):
  """Qwen2 language model with its LM head. Takes embeddings (so audio can be spliced in)."""

  def __init__(self, cfg: DecoderConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
               remat: str = "none", rngs: nnx.Rngs):
    self.config = cfg
    self.dtype = dtype
    remat_lib.check_policy(remat, "Decoder remat")
    self.remat = remat  # policy of the layers in the training forward (__call__)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.embed_tokens = nnx.Embed(
        cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=param_dtype,
        embedding_init=nnx.initializers.normal(INIT_STD),
        embedding_metadata=param_meta("vocab", "embed"), rngs=rngs)
    self.layers = stack.create(lambda r: DecoderLayer(cfg, dtype=dtype, param_dtype=param_dtype,
                                                      rngs=r), cfg.num_hidden_layers, rngs)
    self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype)
    self.lm_head = (None if cfg.tie_word_embeddings else
                    dense(cfg.hidden_size, cfg.vocab_size, ("embed", "vocab"), use_bias=False, **kw))

  def embed(self, input_ids: jax.Array) -> jax.Array:
    """int[B, T] -> [B, T, E] in the compute dtype."""
    return self.embed_tokens(input_ids)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """[..., E] (final-normed) -> f32[..., V]; the product accumulates in float32."""
    h = hidden.astype(self.dtype)
    if flat_tokens():  # see audio_encoder.Dense
      h = h.reshape(-1, h.shape[-1])
    if self.lm_head is None:
      table = self.embed_tokens.embedding[...].astype(self.dtype)
      out = jnp.einsum("...e,ve->...v", h, table, preferred_element_type=jnp.float32)
    else:
      kernel = self.lm_head.kernel[...].astype(self.dtype)
      out = jnp.einsum("...e,ev->...v", h, kernel, preferred_element_type=jnp.float32)
    return out.reshape(*hidden.shape[:-1], out.shape[-1])

  def _rope(self, positions):
    return rope_tables(positions, self.config.kv_head_dim, self.config.rope_theta, self.dtype)

  def __call__(self, embeds: jax.Array, attention_mask: jax.Array | None = None,
               positions: jax.Array | None = None) -> jax.Array:
    """Full causal forward. embeds: [B, T, E]; attention_mask: int/bool[B, T] (1 = real token,
    None = all real); positions: int[B, T] (default `positions_from_mask`).
    Returns the final-normed hidden states [B, T, E]."""
    b, t, _ = embeds.shape
    am = jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool)
    positions = positions_from_mask(am) if positions is None else positions
    cos, sin = self._rope(positions)
    mask = am[:, None, None, :]  # keys; causality inside the attention call

    def body(layer, x, _):
      return constrain(layer(x, cos, sin, mask, is_causal=True)[0], RESIDUAL), None

    x, _ = stack.scan(self.layers, body, constrain(embeds.astype(self.dtype), RESIDUAL),
                      remat=self.remat)
    return self.norm(x)

  def shared_prefix(self, prefix_embeds: jax.Array, prefix_mask: jax.Array, embeds: jax.Array,
                    attention_mask: jax.Array, group: int) -> tuple[jax.Array, jax.Array]:
    """Causal forward of B groups: one prefix each, shared by its `group` continuations.

    prefix_embeds: [B, P, E] (left-padded prompts), prefix_mask: [B, P]; embeds: [B * G, M, E]
    (G = `group` rows per prefix, contiguous), attention_mask: [B * G, M]. The prefix runs
    through each layer ONCE per group; each continuation attends to its group's prefix keys and
    values and causally to its own tokens, at positions continuing the prefix's: the same
    values as the full forward of [prefix; continuation] repeated G times, at about
    (P + G M) / (G (P + M)) of its token work, and gradients reach the prefix once (summed
    over the group). Returns final-normed hidden states (prefix [B, P, E], rows [B * G, M, E]).
    """
    b, p, _ = prefix_embeds.shape
    n, m, _ = embeds.shape
    if n != b * group:
      raise ValueError(f"shared_prefix: {n} rows are not {b} prefixes x group {group}")
    pm = prefix_mask.astype(bool)
    am = attention_mask.astype(bool)
    cos_p, sin_p = self._rope(positions_from_mask(pm))
    start = jnp.repeat(jnp.sum(pm, axis=1, dtype=jnp.int32), group)
    cos_c, sin_c = self._rope(positions_from_mask(am, start))
    # The prefix attends causally among its real tokens (causality inside the attention call);
    # continuations attend to their group's prefix (`grouped_attention`) and causally to their
    # own tokens: the prefix's keys are never repeated G times.
    own = (jnp.tril(jnp.ones((m, m), bool))[None] & am[:, None, :])[:, None]  # [N, 1, M, M]

    def body(layer, carry, _):
      xp, xc = carry
      xp, (k, v) = layer(xp, cos_p, sin_p, pm[:, None, None, :], is_causal=True)
      xc, _ = layer(xc, cos_c, sin_c, own, prefix=(k, v, pm))
      return (constrain(xp, RESIDUAL), constrain(xc, RESIDUAL)), None

    start = (constrain(prefix_embeds.astype(self.dtype), RESIDUAL),
             constrain(embeds.astype(self.dtype), RESIDUAL))
    (xp, xc), _ = stack.scan(self.layers, body, start, remat=self.remat)
    return self.norm(xp), self.norm(xc)

  def prefill(self, embeds: jax.Array, attention_mask: jax.Array,
              cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Run T (left-padded) prompt tokens into a FRESH cache (index 0): attention among the T
    tokens only, keys/values written to slots [0, T). Returns (hidden [B, T, E], cache)."""
    b, t, _ = embeds.shape
    if t > cache.max_length:
      raise ValueError(f"prefill: prompt length {t} exceeds the cache length {cache.max_length}")
    am = attention_mask.astype(bool)
    cos, sin = self._rope(positions_from_mask(am))
    mask = am[:, None, None, :]  # keys; causality inside the attention call

    def body(layer, x, _):
      x, (k, v) = layer(x, cos, sin, mask, is_causal=True)
      return constrain(x, RESIDUAL), (k.astype(cache.k.dtype), v.astype(cache.v.dtype))

    x, (ks, vs) = stack.scan(self.layers, body, constrain(embeds.astype(self.dtype), RESIDUAL))
    new_mask = jax.lax.dynamic_update_slice(jnp.zeros_like(cache.mask), am, (0, 0))
    cache = KVCache(k=jax.lax.dynamic_update_slice(cache.k, ks, (0,) * 5),
                    v=jax.lax.dynamic_update_slice(cache.v, vs, (0,) * 5), mask=new_mask,
                    next_position=jnp.sum(am, axis=1, dtype=jnp.int32),
                    index=jnp.asarray(t, jnp.int32))
    return self.norm(x), cache

  def extend(self, embeds: jax.Array, attention_mask: jax.Array,
             cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Append T tokens (T = 1 for a decode step) at `cache.index`, attending over the cache
    (its shared prefix included, see `share_prefix`).
    attention_mask: int/bool[B, T] (0 = a slot that stays masked, e.g. a finished row).
    Returns (hidden [B, T, E], cache)."""
    b, t, _ = embeds.shape
    am = attention_mask.astype(bool)
    index = cache.index
    cos, sin = self._rope(positions_from_mask(am, cache.next_position))
    new_mask = jax.lax.dynamic_update_slice(cache.mask, am, (0, index))
    slots = jnp.arange(cache.max_length)
    causal = slots[None, :] <= index + jnp.arange(t)[:, None]  # [T, S]
    mask = (causal[None] & new_mask[:, None, :])[:, None]  # [B, 1, T, S]
    pre = cache.prefix

    def body(layer, carry, xs):
      x, k_all, v_all = carry
      index_l, prefix_kv = xs
      shared = None if pre is None else prefix_kv + (pre.mask,)
      x, (k_all, v_all) = layer(x, cos, sin, mask, (k_all, v_all, index_l), index, prefix=shared)
      return (constrain(x, RESIDUAL), k_all, v_all), None

    # The cache rides in the carry (each layer writes its slots in place); the prefix is
    # read-only, sliced per layer.
    per_layer = (jnp.arange(self.config.num_hidden_layers), None if pre is None else (pre.k, pre.v))
    start = (constrain(embeds.astype(self.dtype), RESIDUAL), cache.k, cache.v)
    (x, ks, vs), _ = stack.scan(self.layers, body, start, per_layer)
    cache = cache.replace(k=ks, v=vs, mask=new_mask,
                          next_position=cache.next_position + jnp.sum(am, axis=1, dtype=jnp.int32),
                          index=index + t)
    return self.norm(x), cache
