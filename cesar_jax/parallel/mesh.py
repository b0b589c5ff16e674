"""One device mesh ('data', 'fsdp', 'tensor') and THE rule table from logical axis names to it.

Model parameters carry logical axis names in their `out_sharding` metadata (set in
cesar_jax/models/*, never sharded at creation). `LOGICAL_RULES` maps each name to mesh axes;
for parameters, a mesh axis that does not divide the dimension (or is already used by another
dimension of the same array) is dropped for that array (logged once at start-up:
`replicated_dims`), so any model runs on any mesh, replicated where it must be. Batches never
replicate: a batch dimension that does not split over ('data', 'fsdp') is an error
(`check_batch`, naming the config field).

  mesh = make_mesh((1, 4, 2))                           # ('data', 'fsdp', 'tensor')
  model = shard_model(model, mesh)                      # params placed on the mesh
  shardings = state_shardings(nnx.state(model), mesh)   # for jit in/out_shardings
  batch = jax.device_put(x, batch_sharding(mesh, x.shape))
  cache_sh = cache_shardings(cache, mesh)               # a KVCache of NamedShardings
  with jax.set_mesh(mesh): ...                          # models also constrain activations

Logical names used by the models: batch, embed, vocab, heads, kv_heads, mlp, norm, layers (the
stacked layer axis) and the KV cache's length and kv_head_dim; None means replicated.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes (a name, a tuple of names, or None = replicated).
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),  # activations and batches: data parallel over both axes
    ("embed", "fsdp"),            # model width: parameters sharded FSDP-style
    ("vocab", "tensor"),
    ("heads", "tensor"),          # flattened heads * head_dim of q / o (and encoder attention)
    ("kv_heads", "tensor"),       # flattened kv_heads * head_dim of k / v; cache kv heads
    ("kv_head_dim", "tensor"),    # cache head_dim, when tensor is not already on its kv heads
    ("mlp", "tensor"),
    ("norm", None),
    ("length", None),
    ("layers", None),             # the stacked layer axis (models/stack.py): every chip holds
                                  # its shard of every layer
)


def make_mesh(shape: Sequence[int], axis_names: Sequence[str] = MESH_AXES,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh with Auto axes (JAX 0.10's default Explicit axes break with_sharding_constraint).

  One entry of `shape` may be -1: it takes all remaining devices, e.g. (1, -1, 1) = pure FSDP.
  """
  devices = jax.devices() if devices is None else list(devices)
  shape = list(shape)
  if len(shape) != len(axis_names):
    raise ValueError(f"make_mesh: shape {shape} and axis_names {tuple(axis_names)} differ in length")
  if shape.count(-1) > 1:
    raise ValueError(f"make_mesh: at most one -1 in shape {shape}")
  if -1 in shape:
    rest = math.prod(s for s in shape if s != -1)
    shape[shape.index(-1)] = len(devices) // rest
  if math.prod(shape) != len(devices):
    raise ValueError(f"make_mesh: shape {tuple(shape)} needs {math.prod(shape)} devices, "
                     f"{len(devices)} are given")
  return jax.make_mesh(tuple(shape), tuple(axis_names), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(shape))


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules=LOGICAL_RULES) -> PartitionSpec:
  """PartitionSpec for an array of `shape` whose dims carry logical `names`.

  Per dim, the rule's mesh axes are kept in order while their product divides the dim; axes
  absent from the mesh, of size 1, or already used by an earlier dim are skipped.
  """
  table = dict(rules)
  if len(names) != len(shape):
    raise ValueError(f"logical names {tuple(names)} do not match shape {tuple(shape)}")
  used: set[str] = set()
  spec = []
  for name, dim in zip(names, shape):
    target = table.get(name) if name is not None else None
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    kept, size = [], 1
    for axis in axes:
      n = mesh.shape.get(axis, 1)
      if axis in used or n == 1 or dim % (size * n):
        continue
      kept.append(axis)
      size *= n
    used.update(kept)
    spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  return PartitionSpec(*spec)


def variable_sharding(variable: nnx.Variable, mesh: Mesh, rules=LOGICAL_RULES) -> NamedSharding:
  """NamedSharding of one Variable from its `out_sharding` logical names (replicated without)."""
  value = variable.get_value() if hasattr(variable, "get_value") else variable.value
  names = variable.get_metadata().get("out_sharding") or (None,) * len(value.shape)
  return NamedSharding(mesh, logical_to_spec(names, value.shape, mesh, rules))


def state_shardings(state: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
  """The tree of `state` (an nnx.State, abstract or concrete) with a NamedSharding per Variable."""
  return jax.tree.map(
      lambda v: v.replace(variable_sharding(v, mesh, rules)) if isinstance(v, nnx.Variable)
      else NamedSharding(mesh, PartitionSpec()),
      state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(model: nnx.Module, mesh: Mesh, rules=LOGICAL_RULES) -> nnx.Module:
  """Place every Variable of `model` on `mesh` by the rule table (in place); returns the model."""
  state = nnx.state(model)
  shardings = state_shardings(state, mesh, rules)
  nnx.update(model, jax.device_put(state, shardings))
  return model


def batch_axes(mesh: Mesh, rules=LOGICAL_RULES) -> tuple[str, ...]:
  """The mesh axes (of size > 1) that a batch dimension is split over."""
  target = dict(rules).get("batch")
  axes = (target,) if isinstance(target, str) else tuple(target or ())
  return tuple(a for a in axes if mesh.shape.get(a, 1) > 1)


def batch_shards(mesh: Mesh, rules=LOGICAL_RULES) -> int:
  """How many ways a batch dimension is split (the product of the batch axes' sizes)."""
  return math.prod(mesh.shape[a] for a in batch_axes(mesh, rules))


def check_batch(size: int, mesh: Mesh, what: str, rules=LOGICAL_RULES) -> None:
  """A ValueError naming `what` (a config field) when `size` rows cannot split over the mesh.

  Batches are never replicated to make a shape fit: a batch that does not divide would make
  every host's rows a different slice of a different global array.
  """
  shards = batch_shards(mesh, rules)
  if size % shards:
    sizes = ", ".join(f"{a}={mesh.shape[a]}" for a in batch_axes(mesh, rules))
    raise ValueError(f"{what} = {size} does not split over the mesh's batch axes ({sizes}: "
                     f"{shards} shards); make it a multiple of {shards} or change config.mesh.shape")


def batch_sharding(mesh: Mesh, shape: Sequence[int], rules=LOGICAL_RULES) -> NamedSharding:
  """Shard dim 0 over ('data', 'fsdp'), replicate the rest; dim 0 must divide (`check_batch`)."""
  check_batch(shape[0], mesh, f"a batch of shape {tuple(shape)}: dim 0", rules)
  names = ("batch",) + (None,) * (len(shape) - 1)
  return NamedSharding(mesh, logical_to_spec(names, shape, mesh, rules))


def replicated_dims(state: Any, mesh: Mesh, rules=LOGICAL_RULES) -> list[str]:
  """Parameter dims that the rule table would shard but that stay replicated (not divisible).

  One line per case, e.g. "language_model/lm_head/kernel dim 1 (vocab=1000): tensor=4 does
  not divide"; start-up logs them once so a layout that wastes memory is visible.
  """
  table = dict(rules)
  out = []
  flat = nnx.to_flat_state(state) if isinstance(state, nnx.State) else []
  for path, var in flat:
    value = var.get_value() if hasattr(var, "get_value") else var
    names = var.get_metadata().get("out_sharding") if hasattr(var, "get_metadata") else None
    if not names:
      continue
    spec = logical_to_spec(names, value.shape, mesh, rules)
    for dim, (name, size, got) in enumerate(zip(names, value.shape, spec)):
      target = table.get(name) if name is not None else None
      want = (target,) if isinstance(target, str) else tuple(target or ())
      want = [a for a in want if mesh.shape.get(a, 1) > 1]
      kept = () if got is None else ((got,) if isinstance(got, str) else tuple(got))
      missing = [a for a in want if a not in kept]
      if missing:
        axes = ", ".join(f"{a}={mesh.shape[a]}" for a in missing)
        out.append(f"{'/'.join(map(str, path))} dim {dim} ({name}={size}): {axes} "
                   "not used (does not divide, or taken by another dim)")
  return out


def cache_shardings(cache: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
  """Shardings for a decoder KVCache: k/v [L, N, H_kv, S, D] by batch and kv heads, or by
  head_dim where 'tensor' does not divide the kv heads (Qwen2.5-Omni-7B: 4 kv heads on 8-way
  tensor parallelism would otherwise hold the whole cache on every chip); a shared prefix's
  [L, B, H_kv, P, D] likewise (replicated over the batch axes B does not divide)."""
  def kv(x):
    names = ("layers", "batch", "kv_heads", "length", "kv_head_dim")
    return NamedSharding(mesh, logical_to_spec(names, x.shape, mesh, rules))
  def rows(x):
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (x.ndim - 1), x.shape, mesh, rules))
  prefix = cache.prefix
  if prefix is not None:
    prefix = prefix.replace(k=kv(prefix.k), v=kv(prefix.v), mask=rows(prefix.mask))
  return cache.replace(
      k=kv(cache.k), v=kv(cache.v),
      mask=batch_sharding(mesh, cache.mask.shape, rules),
      next_position=batch_sharding(mesh, cache.next_position.shape, rules),
      index=NamedSharding(mesh, PartitionSpec()), prefix=prefix)


def constrain(x: jax.Array, names: Sequence[str | None], rules=LOGICAL_RULES) -> jax.Array:
  """Sharding constraint on an activation by logical names, under `jax.set_mesh(mesh)` only.

  Without a mesh context this is the identity, so models run unchanged on one device.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(names, x.shape, mesh, rules))


def target_platform() -> str:
  """The platform the program being traced runs on: the `jax.set_mesh` context's devices
  ("tpu" in a compile check for TPU, though this host is a CPU), else the default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  device = None if mesh.empty else mesh.abstract_device
  return device.platform if device is not None else jax.default_backend()


def put_sharded(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array from the WHOLE array (every host holds all of it), each process
  materialising only its own shards (parameters; batches use `host_to_global`)."""
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def host_to_global(tree: Any, shardings: Any) -> Any:
  """Host-local rows -> global arrays: THE place where a step's inputs become global.

  Each process passes only its own rows of every batch-sharded leaf (dim 0 sharded in its
  sharding); the global array stacks the processes' rows in process order, so its dim 0 is
  `local rows * process_count`. Leaves whose dim 0 is not sharded (scalars, stop ids, keys) are
  the same on every host and pass as they are. With one process this is a sharded device_put.
  """
  n = jax.process_count()

  def put(x, sharding):
    x = np.asarray(x)
    spec = tuple(sharding.spec)
    sharded = x.ndim > 0 and bool(spec) and spec[0] is not None
    global_shape = ((x.shape[0] * n,) + x.shape[1:]) if sharded else x.shape
    return jax.make_array_from_process_local_data(sharding, x, global_shape)

  return jax.tree.map(put, tree, shardings)


def host_batch_to_global(tree: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
  """`host_to_global` with every leaf batch-sharded on dim 0 (scalars replicated).

  The dim-0 check names the global shape: a local batch that does not divide over the mesh is
  an error, never a silent replication.
  """
  n = jax.process_count()

  def sharding(x):
    shape = np.shape(x)
    if not shape:
      return NamedSharding(mesh, PartitionSpec())
    return batch_sharding(mesh, (shape[0] * n,) + tuple(shape[1:]), rules)

  return host_to_global(tree, jax.tree.map(sharding, tree))
