"""Next-token selection with traced controls: temperature, top-k, top-p, greedy.

Every control is a per-row array (`f32[B]` / `int32[B]`), so one batch may mix greedy and
sampled rows, and changing any value between calls never recompiles. The order of the
transformations follows Hugging Face `generate` (temperature, then top-k, then top-p over the
top-k survivors), so a sampled distribution here is the one `generate` samples from.

* temperature 0 means greedy (argmax of the raw logits); > 0 divides the logits.
* top_k <= 0 (or >= vocabulary size) means no top-k; a traced k works by sorting the logits
  once and masking by rank, never by `lax.top_k` (whose k must be static).
* top_p >= 1 means no nucleus filtering; a token is kept while the probability mass of the
  tokens ranked strictly above it is < top_p (so the most likely token is always kept).

The sort only runs when some row filters, and the random draw only when some row samples
(`lax.cond`s), so plain temperature sampling and greedy decoding never pay for them.

The recorded log-prob of a token is `log_softmax(logits / T)` at that token (T = 1 for greedy
rows), over the whole vocabulary, not the truncated distribution: that is the quantity GRPO's
ratio recomputes (logits divided by the sampling temperature before the log-softmax).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


@flax.struct.dataclass
class SamplingParams:
  """Per-row decoding controls; all traced.

  Attributes:
    temperature: f32[B]; 0 = greedy.
    top_p: f32[B]; 1 = off.
    top_k: int32[B]; 0 = off.
  """
  temperature: jax.Array
  top_p: jax.Array
  top_k: jax.Array

  @classmethod
  def create(cls, batch_size: int, *, temperature: float | np.ndarray = 1.0,
             top_p: float | np.ndarray = 1.0, top_k: int | np.ndarray = 0,
             greedy: bool = False) -> "SamplingParams":
    """Broadcasts scalars (or per-row arrays) to `[batch_size]`; `greedy=True` sets T = 0."""
    temperature = np.zeros((), np.float32) if greedy else temperature
    def row(x, dtype, name):
      x = np.asarray(x, dtype)
      if x.ndim > 1 or (x.ndim == 1 and x.shape[0] != batch_size):
        raise ValueError(f"SamplingParams.{name}: expected a scalar or shape [{batch_size}], "
                         f"got shape {x.shape}")
      return np.broadcast_to(x, (batch_size,)).copy()
    temperature = row(temperature, np.float32, "temperature")
    top_p = row(top_p, np.float32, "top_p")
    if np.any(temperature < 0):
      raise ValueError(f"SamplingParams.temperature must be >= 0 (0 = greedy), got {temperature}")
    if np.any((top_p <= 0) | (top_p > 1)):
      raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {top_p}")
    return cls(temperature=temperature, top_p=top_p, top_k=row(top_k, np.int32, "top_k"))

  def repeat(self, num_samples: int) -> "SamplingParams":
    """Rows repeated `num_samples` times each (prompt-major, as the sampler's groups)."""
    return jax.tree.map(lambda x: jnp.repeat(x, num_samples, axis=0), self)


def _safe_temperature(temperature: jax.Array) -> jax.Array:
  """T where T > 0, else 1 (greedy rows score under the untempered distribution)."""
  return jnp.where(temperature > 0, temperature, 1.0)


def filter_logits(logits: jax.Array, top_p: jax.Array, top_k: jax.Array) -> jax.Array:
  """Masks to -inf the tokens top-k / top-p drop; `logits` already divided by the temperature.

  Args:
    logits: f32[B, V] tempered logits.
    top_p: f32[B] nucleus mass; >= 1 keeps everything.
    top_k: int32[B] rank cut; <= 0 keeps everything.

  Returns:
    f32[B, V]: `logits` where kept, -inf elsewhere. Ties at the threshold are kept (as HF).
  """
  vocab = logits.shape[-1]
  sorted_logits = -jnp.sort(-logits, axis=-1)  # Descending, f32[B, V].
  rank = jnp.arange(vocab)[None, :]
  k = jnp.where((top_k > 0) & (top_k < vocab), top_k, vocab)[:, None]
  sorted_logits = jnp.where(rank < k, sorted_logits, -jnp.inf)
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  mass_above = jnp.cumsum(probs, axis=-1) - probs  # Exclusive cumulative mass.
  keep = (mass_above < top_p[:, None]) & (rank < k)
  keep = keep.at[:, 0].set(True)
  num_kept = jnp.sum(keep, axis=-1)
  threshold = jnp.take_along_axis(sorted_logits, (num_kept - 1)[:, None], axis=-1)
  return jnp.where(logits >= threshold, logits, -jnp.inf)


def sample_tokens(key: jax.Array, logits: jax.Array, params: SamplingParams) -> jax.Array:
  """Draws one token per row. logits: f32[B, V] raw. Returns int32[B]."""
  logits = logits.astype(jnp.float32)
  vocab = logits.shape[-1]
  scaled = logits / _safe_temperature(params.temperature)[:, None]
  needs_filter = jnp.any((params.top_k > 0) & (params.top_k < vocab)) | jnp.any(params.top_p < 1)
  scaled = jax.lax.cond(needs_filter, filter_logits, lambda x, p, k: x,
                        scaled, params.top_p, params.top_k)
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  # All-greedy batches skip the Gumbel noise (B * V random draws per step).
  sampled = jax.lax.cond(jnp.any(params.temperature > 0),
                         lambda k, x: jax.random.categorical(k, x, axis=-1).astype(jnp.int32),
                         lambda k, x: greedy, key, scaled)
  return jnp.where(params.temperature > 0, sampled, greedy)


def token_log_probs(logits: jax.Array, tokens: jax.Array, temperature: jax.Array) -> jax.Array:
  """log_softmax(logits / T)[token] per row (T = 1 for greedy rows). Returns f32[B]."""
  scaled = logits.astype(jnp.float32) / _safe_temperature(temperature)[:, None]
  logp = jax.nn.log_softmax(scaled, axis=-1)
  return jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]
