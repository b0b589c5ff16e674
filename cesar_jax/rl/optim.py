"""The optimizer: AdamW, linear warmup + cosine decay, global-norm clipping, non-finite skipping.

Built from the `config.optim` section (see `default_config` for the keys):

    tx = optim.make_optimizer(config.optim)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    ...
    optimizer.update(model, grads, loss=loss)   # `loss` is optional; non-finite -> skipped
    optim.optimizer_metrics(optimizer.opt_state)  # lr, skipped steps, consecutive skips

A step whose gradient (any leaf) or loss is NaN/inf is SKIPPED: the update is zero, so the
parameters are unchanged bit for bit, and the inner optimizer state (Adam moments, the schedule's
step count) is kept as it was. The total and the current run of skips are in the state, so they
are checkpointed with it; the trainer stops a run whose consecutive skips exceed
`max_consecutive_skips` (`check_consecutive_skips`) instead of training on garbage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax


def default_config() -> ml_collections.ConfigDict:
  """The `config.optim` section with its defaults."""
  return ml_collections.ConfigDict(dict(
      lr=1e-5,  # CESAR (arXiv 2510.20867): AdamW, lr 1e-5.
      warmup_steps=0,
      total_steps=1000,  # the cosine reaches end_lr at this step (warmup included)
      end_lr_ratio=0.0,  # end_lr = lr * end_lr_ratio
      b1=0.9,
      b2=0.999,  # torch / HF AdamW defaults, which TRL-based baselines used
      eps=1e-8,
      weight_decay=0.0,  # HF Trainer default; CESAR's is not public
      decay_matrices_only=True,  # no weight decay on biases and norm scales (ndim < 2)
      max_grad_norm=1.0,  # HF Trainer default; None or 0 disables clipping
      max_consecutive_skips=10,  # the trainer stops after this many non-finite steps in a row
  ))


_KEYS = frozenset(default_config().keys())


def _section(optim: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """Defaults overridden by `optim`; unknown keys are an error naming them."""
  unknown = sorted(set(optim.keys()) - _KEYS)
  if unknown:
    raise ValueError(f"config.optim: unknown keys {unknown}; known: {sorted(_KEYS)}")
  cfg = default_config()
  cfg.update(dict(optim))
  if cfg.total_steps < 1 or cfg.warmup_steps < 0 or cfg.warmup_steps > cfg.total_steps:
    raise ValueError(f"config.optim: need 0 <= warmup_steps ({cfg.warmup_steps}) <= total_steps "
                     f"({cfg.total_steps}) and total_steps >= 1")
  return cfg


def learning_rate_schedule(optim: Mapping[str, Any]) -> optax.Schedule:
  """0 -> lr linearly over warmup_steps, then cosine to lr * end_lr_ratio at total_steps."""
  cfg = _section(optim)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=cfg.lr,
      warmup_steps=cfg.warmup_steps,
      decay_steps=cfg.total_steps,  # optax counts the warmup inside decay_steps
      end_value=cfg.lr * cfg.end_lr_ratio,
  )


def _matrices(params):
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(optim: Mapping[str, Any]) -> optax.GradientTransformationExtraArgs:
  """skip_nonfinite(clip_by_global_norm -> AdamW(schedule)) from the `config.optim` section."""
  cfg = _section(optim)
  # `mask` is a function of the params, not a schedule: it must be a static argument. Keep the
  # hyperparameters in f32: by default they take the params' dtype, and in bf16 b2 = 0.999
  # rounds to 1, so Adam's bias correction 1 - b2^t is 0 and the update NaN.
  adamw = optax.inject_hyperparams(
      optax.adamw, static_args=("mask",), hyperparam_dtype=jnp.float32)(
      learning_rate=learning_rate_schedule(cfg),
      b1=cfg.b1,
      b2=cfg.b2,
      eps=cfg.eps,
      weight_decay=cfg.weight_decay,
      mask=_matrices if cfg.decay_matrices_only else None,
  )
  parts = [adamw]
  if cfg.max_grad_norm:
    parts.insert(0, optax.clip_by_global_norm(cfg.max_grad_norm))
  return skip_nonfinite(optax.chain(*parts))


class SkipNonFiniteState(NamedTuple):
  """State of `skip_nonfinite`: totals are int32[] scalars."""
  inner_state: Any
  skipped: jax.Array  # steps skipped since the start of training
  consecutive: jax.Array  # skips in a row up to now (0 after a good step)


def _all_finite(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.array(True)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _cast_like(tree, like):
  return jax.tree.map(lambda x, y: x.astype(y.dtype) if hasattr(y, "dtype") else x, tree, like)


def skip_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """Wraps `inner` so that a step with a non-finite gradient or `loss` changes nothing.

  Like `optax.apply_if_finite`, but it also looks at the loss (pass `loss=` to `update`), and it
  never gives up and applies a non-finite update: deciding to stop is the trainer's job.
  """
  inner = optax.with_extra_args_support(inner)

  def init(params):
    zero = jnp.zeros([], jnp.int32)
    return SkipNonFiniteState(inner_state=inner.init(params), skipped=zero, consecutive=zero)

  def update(updates, state, params=None, *, loss=None, **extra):
    finite = _all_finite(updates)
    if loss is not None:
      finite = finite & jnp.all(jnp.isfinite(loss))

    def apply(_):
      new_updates, inner_state = inner.update(updates, state.inner_state, params, **extra)
      # f32 hyperparameters promote bf16 updates and moments: keep the dtypes they came in.
      return _cast_like(new_updates, updates), _cast_like(inner_state, state.inner_state)

    def skip(_):
      return optax.tree.zeros_like(updates), state.inner_state

    new_updates, inner_state = jax.lax.cond(finite, apply, skip, None)
    bad = (~finite).astype(jnp.int32)
    return new_updates, SkipNonFiniteState(
        inner_state=inner_state,
        skipped=state.skipped + bad,
        consecutive=(state.consecutive + 1) * bad,
    )

  return optax.GradientTransformationExtraArgs(init, update)


def _key_name(key) -> str:
  for attr in ("name", "key", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _lookup(opt_state, *names: str) -> jax.Array:
  """The leaf whose path ends with `names` (ignoring nnx's trailing `.value`).

  Works on the raw optax state, `nnx.Optimizer.opt_state` and the `nnx.split` state (where the
  named tuples have become dicts).
  """
  for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
    keys = [_key_name(k) for k in path]
    if keys and keys[-1] == "value":
      keys = keys[:-1]
    if tuple(keys[-len(names):]) == names:
      return leaf
  raise ValueError(f"no {'/'.join(names)} in this optimizer state: was it built by "
                   "optim.make_optimizer?")


def optimizer_metrics(opt_state) -> dict[str, jax.Array]:
  """`optim/lr` (used by the last update), `optim/skipped_steps`, `optim/consecutive_skips`."""
  return {
      "optim/lr": _lookup(opt_state, "hyperparams", "learning_rate"),
      "optim/skipped_steps": _lookup(opt_state, "skipped"),
      "optim/consecutive_skips": _lookup(opt_state, "consecutive"),
  }


def check_consecutive_skips(consecutive: int, optim: Mapping[str, Any], step: int) -> None:
  """Raises when training has produced non-finite steps `max_consecutive_skips` times in a row."""
  limit = _section(optim).max_consecutive_skips
  if limit and consecutive >= limit:
    raise FloatingPointError(
        f"step {step}: {consecutive} consecutive steps had a non-finite loss or gradient "
        f"(config.optim.max_consecutive_skips={limit}); stopping. Restart from the last "
        "checkpoint with a lower lr or check the inputs of those steps.")
