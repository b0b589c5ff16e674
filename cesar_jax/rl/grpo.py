"""GRPO core: group advantages, the clipped policy loss with a k3 KL term, token log-probs.

Pure jax functions of arrays; nothing here knows about models or the trainer. Two registries
select the variants by name from the config, so a researcher adds one with a decorator:

    @grpo.register_advantage_estimator("rank")
    def rank_advantages(rewards, num_generations): ...

    config.rl.advantage = "rank"

* advantage estimators (`group`, `batch`, `none`): `fn(rewards: f32[N], num_generations) ->
  f32[N]`, N = B*G rollouts with the G samples of a prompt CONTIGUOUS (rows g*G .. g*G+G-1),
  which is the order the sampler returns them in.
* loss aggregations (`grpo`, `bnpo`, `dr_grpo`, `dapo`): how per-token losses f32[N, T] become
  one scalar; `policy_loss(..., LossConfig(aggregation=name))` picks one.

Conventions (TRL's GRPOTrainer, the reference implementation R1-AQA and Ke-Omni-R trained with):
* std is the SAMPLE std (ddof=1, as torch.std); a group of one sample has std 0.
* a group whose rewards are all equal gets advantage exactly 0 (never NaN, never 1e-4 noise).
* per-token logits are divided by the sampling temperature before the log-softmax.
* with several updates per batch the sampler's log-probs are `old_logp`; with one update pass
  `old_logp=None` (ratio 1 in value, the policy gradient still flows through `logp`).
* gradient accumulation over k minibatches: average the k minibatch losses for `grpo`, `bnpo`
  and `dr_grpo` (TRL divides by the accumulation steps) but SUM them for `dapo`, whose
  normaliser `num_active_tokens` is already the token count of the whole global batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from absl import logging

# A = (r - mean) / (std + 1e-4): TRL GRPOTrainer / R1-AQA (arXiv 2503.11197).
STD_EPS = 1e-4


class AdvantageFn(Protocol):

  def __call__(self, rewards: jax.Array, num_generations: int) -> jax.Array:
    ...


class AggregationFn(Protocol):

  def __call__(
      self,
      values: jax.Array,
      mask: jax.Array,
      *,
      max_completion_length: int | None,
      num_active_tokens: jax.Array | None,
  ) -> jax.Array:
    ...


_ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {}
_LOSS_AGGREGATIONS: dict[str, AggregationFn] = {}


def _registrar(table: dict[str, Any], kind: str, name: str) -> Callable[[Any], Any]:

  def decorator(fn):
    if name in table and table[name] is not fn:
      # Re-running a notebook cell re-registers: replace, but say so.
      logging.warning("Replacing the %s registered as %r.", kind, name)
    table[name] = fn
    return fn

  return decorator


def _lookup(table: dict[str, Any], kind: str, name: str) -> Any:
  try:
    return table[name]
  except KeyError:
    raise KeyError(f"No {kind} named {name!r}; registered: {sorted(table)}") from None


def register_advantage_estimator(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
  """Decorator: registers `fn(rewards: f32[N], num_generations: int) -> f32[N]` as `name`."""
  return _registrar(_ADVANTAGE_ESTIMATORS, "advantage estimator", name)


def get_advantage_estimator(name: str) -> AdvantageFn:
  return _lookup(_ADVANTAGE_ESTIMATORS, "advantage estimator", name)


def advantage_estimators() -> list[str]:
  return sorted(_ADVANTAGE_ESTIMATORS)


def register_loss_aggregation(name: str) -> Callable[[AggregationFn], AggregationFn]:
  """Decorator: registers `fn(values f32[N,T], mask f32[N,T], *, max_completion_length,
  num_active_tokens) -> f32[]` as `name`."""
  return _registrar(_LOSS_AGGREGATIONS, "loss aggregation", name)


def get_loss_aggregation(name: str) -> AggregationFn:
  return _lookup(_LOSS_AGGREGATIONS, "loss aggregation", name)


def loss_aggregations() -> list[str]:
  return sorted(_LOSS_AGGREGATIONS)


# ---------------------------------------------------------------------------------------------
# Advantage estimators.
# ---------------------------------------------------------------------------------------------


def _grouped(rewards: jax.Array, num_generations: int) -> jax.Array:
  """f32[N] -> f32[N // G, G]; checks the layout."""
  if rewards.ndim != 1 or num_generations < 1 or rewards.shape[0] % num_generations:
    raise ValueError(
        f"rewards must be f32[B*G] with the G={num_generations} samples of a prompt contiguous;"
        f" got shape {rewards.shape}")
  return rewards.astype(jnp.float32).reshape(-1, num_generations)


def _sample_std(x: jax.Array, axis: int | None = None, keepdims: bool = False) -> jax.Array:
  """Standard deviation with ddof=1 (torch.std); 0 where there is a single value."""
  n = x.size if axis is None else x.shape[axis]
  if n < 2:
    return jnp.zeros_like(jnp.sum(x, axis=axis, keepdims=keepdims))
  return jnp.std(x, axis=axis, ddof=1, keepdims=keepdims)


def _centered(grouped: jax.Array) -> jax.Array:
  """r - group mean, exactly 0 in groups of identical rewards (the float mean may not be)."""
  centered = grouped - jnp.mean(grouped, axis=1, keepdims=True)
  constant = jnp.max(grouped, axis=1, keepdims=True) == jnp.min(grouped, axis=1, keepdims=True)
  return jnp.where(constant, 0.0, centered)


@register_advantage_estimator("group")
def group_advantages(rewards: jax.Array, num_generations: int) -> jax.Array:
  """GRPO: (r - group mean) / (group std + 1e-4). rewards: f32[B*G] -> f32[B*G]."""
  grouped = _grouped(rewards, num_generations)
  std = _sample_std(grouped, axis=1, keepdims=True)
  return (_centered(grouped) / (std + STD_EPS)).reshape(-1)


@register_advantage_estimator("batch")
def batch_advantages(rewards: jax.Array, num_generations: int) -> jax.Array:
  """(r - group mean) / (std of the whole batch + 1e-4) (TRL scale_rewards="batch")."""
  grouped = _grouped(rewards, num_generations)
  return (_centered(grouped) / (_sample_std(grouped) + STD_EPS)).reshape(-1)


@register_advantage_estimator("none")
def unscaled_advantages(rewards: jax.Array, num_generations: int) -> jax.Array:
  """Dr. GRPO (arXiv 2503.20783) and CESAR's A = R - mean_K(R): no std scaling."""
  return _centered(_grouped(rewards, num_generations)).reshape(-1)


# ---------------------------------------------------------------------------------------------
# Loss aggregations. values: f32[N, T] per-token losses, mask: f32[N, T] in {0, 1}.
# ---------------------------------------------------------------------------------------------


def _masked_sum(values: jax.Array, mask: jax.Array, axis: int | None = None) -> jax.Array:
  # `where`, not `values * mask`: padding positions may hold inf (e.g. -inf log-probs).
  return jnp.sum(jnp.where(mask > 0, values, 0.0), axis=axis)


@register_loss_aggregation("grpo")
def grpo_aggregation(values, mask, *, max_completion_length=None, num_active_tokens=None):
  """Token mean per sequence, then mean over sequences (the GRPO paper; TRL "grpo")."""
  del max_completion_length, num_active_tokens
  per_seq = _masked_sum(values, mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
  return jnp.mean(per_seq)


@register_loss_aggregation("bnpo")
def bnpo_aggregation(values, mask, *, max_completion_length=None, num_active_tokens=None):
  """Mean over all active tokens of the batch."""
  del max_completion_length, num_active_tokens
  return _masked_sum(values, mask) / jnp.maximum(jnp.sum(mask), 1.0)


@register_loss_aggregation("dr_grpo")
def dr_grpo_aggregation(values, mask, *, max_completion_length=None, num_active_tokens=None):
  """Sum / (N * max_completion_length): a constant normaliser (Dr. GRPO). Defaults to T."""
  del num_active_tokens
  length = values.shape[1] if max_completion_length is None else max_completion_length
  return _masked_sum(values, mask) / (values.shape[0] * length)


@register_loss_aggregation("dapo")
def dapo_aggregation(values, mask, *, max_completion_length=None, num_active_tokens=None):
  """Sum / active tokens of the GLOBAL batch (DAPO). Pass `num_active_tokens` when the batch is
  split into minibatches for gradient accumulation; by default this batch's own count."""
  del max_completion_length
  count = jnp.sum(mask) if num_active_tokens is None else num_active_tokens
  return _masked_sum(values, mask) / jnp.maximum(count, 1.0)


# ---------------------------------------------------------------------------------------------
# Per-token log-probs and entropy.
# ---------------------------------------------------------------------------------------------


def _scaled(logits: jax.Array, temperature: float | jax.Array) -> jax.Array:
  if isinstance(temperature, (int, float)) and temperature <= 0:
    raise ValueError(f"temperature must be > 0 to score samples, got {temperature}")
  return logits.astype(jnp.float32) / temperature


def token_log_probs(
    logits: jax.Array, tokens: jax.Array, temperature: float | jax.Array = 1.0
) -> jax.Array:
  """log softmax(logits / temperature)[tokens]: f32[B, T, V], int32[B, T] -> f32[B, T].

  `logits[:, t]` must be the distribution that produced `tokens[:, t]` (shift before calling).
  The chosen logit is gathered (no one-hot over V); under jit XLA fuses the scale, the
  logsumexp and the gather, so no extra [B, T, V] array is kept for the forward pass.
  """
  scaled = _scaled(logits, temperature)
  picked = jnp.take_along_axis(scaled, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(scaled, axis=-1)


def token_entropy(logits: jax.Array, temperature: float | jax.Array = 1.0) -> jax.Array:
  """Entropy of softmax(logits / temperature) per position: f32[B, T, V] -> f32[B, T].

  H = logsumexp(s) - sum(softmax(s) * s), with s the scaled logits.
  """
  scaled = _scaled(logits, temperature)
  probs = jax.nn.softmax(scaled, axis=-1)
  return jax.nn.logsumexp(scaled, axis=-1) - jnp.sum(probs * scaled, axis=-1)


# Completion positions per chunk in `chunked_logp_entropy` (the updates' default).
DEFAULT_LOGITS_CHUNK = 64


def chunked_logp_entropy(
    hidden: jax.Array,
    head_fn: Callable[[jax.Array], jax.Array],
    tokens: jax.Array,
    *,
    chunk: int = DEFAULT_LOGITS_CHUNK,
    temperature: float | jax.Array = 1.0,
    entropy: bool = False,
    argmax_match: bool = False,
) -> dict[str, jax.Array]:
  """Per-token log-probs (and entropy) from hidden states, `chunk` positions at a time.

  hidden: [N, T, E] final-normed states, `hidden[:, t]` predicting `tokens[:, t]`; head_fn:
  [N, c, E] -> f32[N, c, V] (the LM head); tokens: int32[N, T]. Returns {"logp": f32[N, T]}
  plus "entropy" f32[N, T] and "argmax_match" bool[N, T] (argmax of the logits == token) when
  asked. The values are those of `token_log_probs` / `token_entropy` on the full logits.

  A `lax.map` over ceil(T / chunk) chunks (T padded up to a multiple, the padding dropped)
  with each chunk under `jax.checkpoint`: neither the forward nor the backward pass ever holds
  more than one chunk's [N, chunk, V] logits (the backward recomputes a chunk's logits from
  its hidden states), instead of the full f32[N, T, V]. Gradients flow to `hidden` and to the
  head's parameters. chunk <= 0 computes the full logits at once (the unchunked reference).
  """
  n, t, _ = hidden.shape
  if tokens.shape != (n, t):
    raise ValueError(f"chunked_logp_entropy: tokens {tokens.shape} do not match hidden "
                     f"{hidden.shape} ([N, T])")

  def stats(h: jax.Array, tok: jax.Array) -> dict[str, jax.Array]:
    logits = head_fn(h)
    out = {"logp": token_log_probs(logits, tok, temperature)}
    if entropy:
      out["entropy"] = token_entropy(logits, temperature)
    if argmax_match:
      out["argmax_match"] = jnp.argmax(logits, axis=-1) == tok
    return out

  if chunk <= 0 or chunk >= t:
    return stats(hidden, tokens)
  pad = -t % chunk
  h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  tok = jnp.pad(tokens, ((0, 0), (0, pad)))
  c = (t + pad) // chunk
  hs = jnp.swapaxes(h.reshape(n, c, chunk, h.shape[-1]), 0, 1)  # [C, N, chunk, E]
  ts = jnp.swapaxes(tok.reshape(n, c, chunk), 0, 1)
  outs = jax.lax.map(jax.checkpoint(lambda x: stats(*x)), (hs, ts))
  return {k: jnp.swapaxes(v, 0, 1).reshape(n, t + pad)[:, :t] for k, v in outs.items()}


# ---------------------------------------------------------------------------------------------
# Policy loss.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Static (hashable) settings of `policy_loss`; changing one recompiles.

  Attributes:
    aggregation: a registered loss aggregation: grpo | bnpo | dr_grpo | dapo.
    beta: KL coefficient. 0 skips the KL term entirely (no reference log-probs needed).
    epsilon_low, epsilon_high: the ratio is clipped to [1 - epsilon_low, 1 + epsilon_high].
    max_completion_length: dr_grpo's normaliser; None = the completion axis length T.
    log_ratio_clamp: log-ratios are clamped to [-c, c] before exp (overflow guard).
    kl_clamp: per-token k3 KL values are clamped to at most this (None: not clamped).
  """
  aggregation: str = "grpo"
  beta: float = 0.0  # R1-AQA used 0.04, Ke-Omni-R 0.01; CESAR's is not public.
  epsilon_low: float = 0.2  # TRL's default epsilon; CESAR's is not public.
  epsilon_high: float = 0.2
  max_completion_length: int | None = None
  log_ratio_clamp: float = 20.0
  kl_clamp: float | None = 10.0  # as verl's low_var_kl

  @classmethod
  def from_config(cls, config: Mapping[str, Any], where: str = "config") -> LossConfig:
    """Builds from a mapping (e.g. a ConfigDict section); unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - names)
    if unknown:
      raise ValueError(f"{where}: unknown GRPO loss keys {unknown}; known: {sorted(names)}")
    return cls(**dict(config))

  def __post_init__(self):
    get_loss_aggregation(self.aggregation)  # fails early, naming the registered ones
    if self.beta < 0 or self.epsilon_low < 0 or self.epsilon_high < 0:
      raise ValueError(f"beta and epsilons must be >= 0: {self}")


def k3_kl(logp: jax.Array, ref_logp: jax.Array, *, log_ratio_clamp: float = 20.0,
          kl_clamp: float | None = 10.0) -> jax.Array:
  """k3 estimator of KL(pi || pi_ref) per token: exp(d) - d - 1, d = ref_logp - logp (>= 0)."""
  d = jnp.clip(ref_logp - logp, -log_ratio_clamp, log_ratio_clamp)
  kl = jnp.exp(d) - d - 1.0
  return kl if kl_clamp is None else jnp.minimum(kl, kl_clamp)


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  return _masked_sum(values, mask) / jnp.maximum(jnp.sum(mask), 1.0)


def policy_loss(
    logp: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    config: LossConfig,
    *,
    old_logp: jax.Array | None = None,
    ref_logp: jax.Array | None = None,
    entropy: jax.Array | None = None,
    num_active_tokens: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Clipped GRPO surrogate + beta * k3 KL, aggregated per `config.aggregation`.

  Args:
    logp: f32[N, T] per-token log-probs of the completions under the current policy.
    advantages: f32[N] per sequence (broadcast over tokens) or f32[N, T] per token.
    mask: bool/f32[N, T], 1 on completion tokens that are scored (not prompt, not padding).
    config: static settings.
    old_logp: f32[N, T] log-probs of the policy that sampled (the sampler's); None = on-policy
      (`stop_gradient(logp)`, ratio exactly 1).
    ref_logp: f32[N, T] reference-policy log-probs; required iff config.beta > 0, else unused.
    entropy: f32[N, T] per-token entropy, for the metrics only.
    num_active_tokens: f32[] active tokens of the global batch (the `dapo` normaliser).

  Returns:
    (loss f32[], metrics): `loss`, `policy_loss` (without the KL term), `kl` (token mean, when
    beta > 0), `clip_frac/low` (ratio < 1-eps_low with A < 0), `clip_frac/high` (ratio > 1+eps_high
    with A > 0), `clip_frac/region` (either), `ratio/mean|min|max`, `entropy` (when given),
    `completion_tokens`. Fractions and means are over active tokens.
  """
  if logp.ndim != 2 or mask.shape != logp.shape:
    raise ValueError(f"logp and mask must both be [N, T]; got {logp.shape} and {mask.shape}")
  mask = mask.astype(jnp.float32)
  logp = logp.astype(jnp.float32)
  adv = advantages.astype(jnp.float32)
  adv = adv[:, None] if adv.ndim == 1 else adv
  old = jax.lax.stop_gradient(logp) if old_logp is None else old_logp.astype(jnp.float32)

  c = config.log_ratio_clamp
  ratio = jnp.exp(jnp.clip(logp - old, -c, c))
  clipped_ratio = jnp.clip(ratio, 1.0 - config.epsilon_low, 1.0 + config.epsilon_high)
  per_token = -jnp.minimum(ratio * adv, clipped_ratio * adv)

  aggregate = get_loss_aggregation(config.aggregation)
  agg_kwargs = dict(max_completion_length=config.max_completion_length,
                    num_active_tokens=num_active_tokens)
  metrics = {"policy_loss": aggregate(per_token, mask, **agg_kwargs)}
  if config.beta > 0:
    if ref_logp is None:
      raise ValueError(f"LossConfig.beta={config.beta} > 0 needs ref_logp (reference log-probs)")
    kl = k3_kl(logp, ref_logp.astype(jnp.float32), log_ratio_clamp=c, kl_clamp=config.kl_clamp)
    per_token = per_token + config.beta * kl
    metrics["kl"] = _masked_mean(kl, mask)
  loss = aggregate(per_token, mask, **agg_kwargs) if config.beta > 0 else metrics["policy_loss"]
  metrics["loss"] = loss

  low = (ratio < 1.0 - config.epsilon_low) & (adv < 0)
  high = (ratio > 1.0 + config.epsilon_high) & (adv > 0)
  metrics["clip_frac/low"] = _masked_mean(low.astype(jnp.float32), mask)
  metrics["clip_frac/high"] = _masked_mean(high.astype(jnp.float32), mask)
  metrics["clip_frac/region"] = _masked_mean((low | high).astype(jnp.float32), mask)
  active = mask > 0
  any_active = jnp.any(active)
  metrics["ratio/mean"] = _masked_mean(ratio, mask)
  metrics["ratio/min"] = jnp.where(any_active, jnp.min(jnp.where(active, ratio, jnp.inf)), 0.0)
  metrics["ratio/max"] = jnp.where(any_active, jnp.max(jnp.where(active, ratio, -jnp.inf)), 0.0)
  if entropy is not None:
    metrics["entropy"] = _masked_mean(entropy.astype(jnp.float32), mask)
  metrics["completion_tokens"] = jnp.sum(mask)
  return loss, metrics
