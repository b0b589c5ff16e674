"""Rematerialisation policies for transformer layers (`AudioLMConfig.remat`).

  none  keep every intermediate of every layer for the backward pass (fastest, most memory);
  full  keep only each layer's input: the backward pass recomputes the layer (least memory);
  dots  keep the matmul outputs without batch dimensions (projections, MLP), recompute the
        rest: attention scores, softmax, norms, activations (MaxText's "minimal"-like).

`stack.scan(layers, body, carry, remat=policy)` (models/stack.py) wraps each layer's body in
`jax.checkpoint` with the policy; the values are identical, only what the backward pass stores
changes. It only matters under `jax.grad` (the sampler's forward passes are unaffected).
"""

from __future__ import annotations

from typing import Any

import jax

POLICIES: dict[str, Any] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def check_policy(name: str, where: str = "remat") -> None:
  if name not in POLICIES:
    raise ValueError(f"{where}={name!r} is not a remat policy; choose from {sorted(POLICIES)}")
