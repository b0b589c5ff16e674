"""A stack of identical layers held as ONE module and run with `jax.lax.scan`.

  layers = stack.create(lambda rngs: DecoderLayer(cfg, rngs=rngs), count=32, rngs=rngs)
  x, ys = stack.scan(layers, body, x, xs, remat="full")   # body(layer, carry, x) -> (carry, y)
  first = stack.layer(layers, 0)                          # a plain module: layer 0's values

Why: a Python loop over layers traces and compiles every layer apart, so the compile time of a
7B program grows with its depth (the CESAR-7B GRPO update took 814 s to compile for v5e:8x8,
2806 s for v6e:4x4, at 32 unrolled layers). Under a scan the layer is traced and compiled
once, whatever the depth, as MaxText's `scan_layers`.

Layout: every variable of the stack has a leading axis of `count` (layer l at index l) with the
logical axis name "layers" in front of its sharding names (replicated by the mesh rules).
Hugging Face keys still name layers one by one (`...layers.{i}...`): checkpoints/hf.py maps
layer i to index i of the stacked arrays, so checkpoints load and save as before.

The scan splits the stack into (graphdef, state) and merges one layer's slice of the state in
the body: a pure function of arrays, so it runs whatever trace the variables come from (the
reference model's inside the policy's `jax.grad`) and takes `jax.checkpoint` per layer (the
remat policy, models/remat.py). Layers hold no mutable state: the body reads the variables and
never writes them.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from cesar_jax.models import remat as remat_lib

LAYERS = "layers"  # the logical axis name of the stacked dimension

_UNROLL = contextvars.ContextVar("stack_unroll", default=(1, None))


@contextlib.contextmanager
def unrolled(factor: int | bool = True, only: type | None = None):
  """Inside: `scan` runs `factor` layers per loop iteration (True: all, no loop; an odd
  remainder runs after the loop), in the stacks of layer type `only` (None: all). For XLA's
  cost analysis, which counts a loop body once whatever its trip count (compile_check.py)."""
  token = _UNROLL.set((factor, only))
  try:
    yield
  finally:
    _UNROLL.reset(token)


def create(make: Callable[[nnx.Rngs], nnx.Module], count: int, rngs: nnx.Rngs) -> nnx.Module:
  """`count` layers built by `make(rngs)` (each from its own split of `rngs`), stacked."""
  if count < 1:
    raise ValueError(f"stack.create: {count} layers; need at least 1")

  @nnx.split_rngs(splits=count)
  @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: LAYERS})
  def build(rngs):
    return make(rngs)

  return build(rngs)


def depth(layers: nnx.Module) -> int:
  """The number of layers of a stack."""
  return jax.tree.leaves(nnx.state(layers))[0].shape[0]


def layer(layers: nnx.Module, index: int) -> nnx.Module:
  """Layer `index` of a stack as a plain module: its values, its variables' sharding names
  without the leading "layers" (as if built alone)."""
  graphdef, state = nnx.split(layers)
  module = nnx.merge(graphdef, jax.tree.map(lambda x: x[index], state))
  _rename_axes(module, lambda names: names[1:])
  return module


def join(modules: list[nnx.Module]) -> nnx.Module:
  """The inverse of `layer`: modules of one structure (e.g. layers adapted one by one) as a
  stack, the first one's graph (its Python attributes) for all, "layers" put back in front of
  every sharding name."""
  graphdef, first = nnx.split(modules[0])
  states = [first] + [nnx.state(m) for m in modules[1:]]
  module = nnx.merge(graphdef, jax.tree.map(lambda *xs: jnp.stack(xs), *states))
  _rename_axes(module, lambda names: (LAYERS,) + tuple(names))
  return module


def _rename_axes(module: nnx.Module, rename: Callable[[tuple], tuple]) -> None:
  for _, node in nnx.iter_graph(module):
    if isinstance(node, nnx.Variable) and node.get_metadata().get("out_sharding"):
      node.set_metadata(out_sharding=rename(tuple(node.get_metadata()["out_sharding"])))


def scan(layers: nnx.Module, body: Callable[..., tuple[Any, Any]], carry: Any, xs: Any = None,
         *, remat: str = "none") -> tuple[Any, Any]:
  """`jax.lax.scan` over the layers: `body(layer, carry, x) -> (carry, y)`, layer l with slice l
  of `xs` (None: no per-layer inputs). Returns (final carry, ys stacked over layers).

  `remat` wraps each layer's body in `jax.checkpoint` with that policy (values unchanged; only
  what the backward pass keeps changes). Static settings belong in `body`'s closure.
  """
  remat_lib.check_policy(remat)
  graphdef, state = nnx.split(layers)

  def step(carry, inputs):
    layer_state, x = inputs
    return body(nnx.merge(graphdef, layer_state), carry, x)

  if remat != "none":
    # prevent_cse=False: inside a scan's loop CSE cannot undo the rematerialisation
    # (the `jax.checkpoint` documentation's advice for scanned bodies).
    step = jax.checkpoint(step, policy=remat_lib.POLICIES[remat], prevent_cse=False)
  factor, only = _UNROLL.get()
  unroll = factor if only is None or isinstance(layers, only) else 1
  return jax.lax.scan(step, carry, (state, xs), unroll=unroll)
