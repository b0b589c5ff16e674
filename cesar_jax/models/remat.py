"""Rematerialisation policies for transformer layers (`AudioLMConfig.remat`).

  none  keep every intermediate of every layer for the backward pass (fastest, most memory);
  full  keep only each layer's input: the backward pass recomputes the layer (least memory);
  dots  keep the matmul outputs without batch dimensions (projections, MLP), recompute the
        rest: attention scores, softmax, norms, activations (MaxText's "minimal"-like).

`layer_call(policy, fn)` wraps a layer call `fn(layer, *args)` in `jax.checkpoint` with the policy; the
values are identical, only what the backward pass stores changes. It only matters under
`jax.grad` (the sampler's forward passes are unaffected).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from flax import nnx

POLICIES: dict[str, Any] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def check_policy(name: str, where: str = "remat") -> None:
  if name not in POLICIES:
    raise ValueError(f"{where}={name!r} is not a remat policy; choose from {sorted(POLICIES)}")


def layer_call(policy: str, fn: Callable[..., Any] | None = None) -> Callable[..., Any]:
  """`fn(layer, *arrays)` (default `layer(*arrays)`) rematerialised per `policy` (as is for
  'none'). Static settings belong in `fn`'s closure: every argument is traced.

  The layer is split into (graphdef, state) and merged inside a `jax.checkpoint`: a pure
  function, so it works whatever trace the layer's variables come from (e.g. the reference
  model's params inside the policy's `jax.grad`, which `nnx.remat` refuses). The layer's
  variables are read, never written (these layers hold no mutable state).
  """
  check_policy(policy)
  call = fn or (lambda layer, *args: layer(*args))
  if policy == "none":
    return call

  def remat_call(layer, *args):
    graphdef, state = nnx.split(layer)

    def pure(state, *args):
      return call(nnx.merge(graphdef, state), *args)

    return jax.checkpoint(pure, policy=POLICIES[policy], prevent_cse=True)(state, *args)

  return remat_call
