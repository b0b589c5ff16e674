"""Multi-process start-up: one code path for a laptop, a TPU pod and CPU processes on loopback.

`initialize()` is a no-op for a single process. On a TPU pod `jax.distributed.initialize()`
finds its peers by itself; elsewhere the coordinator, process count and id come from the
environment (`CESAR_COORDINATOR=host:port`, `CESAR_NUM_PROCESSES`, `CESAR_PROCESS_ID`), which
is what `launch/multihost_cpu.sh` sets to run several CPU processes on one machine.
"""

from __future__ import annotations

import os

import jax
import numpy as np

ENV_COORDINATOR = "CESAR_COORDINATOR"
ENV_NUM_PROCESSES = "CESAR_NUM_PROCESSES"
ENV_PROCESS_ID = "CESAR_PROCESS_ID"
ENV_LOCAL_DEVICES = "CESAR_LOCAL_CPU_DEVICES"


def _on_tpu_pod() -> bool:
  """A TPU VM worker: a chip is attached and the TPU runtime's worker variables are set (the
  variables alone are not enough: the compile check sets them on a CPU host for libtpu)."""
  from cesar_jax import platforms  # pylint: disable=g-import-not-at-top
  named = os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID")
  return bool(named) and platforms.tpu_chips_present()


def initialize() -> None:
  """Starts `jax.distributed` when the environment asks for several processes."""
  local = os.environ.get(ENV_LOCAL_DEVICES)
  if local:  # fake CPU devices per process (loopback runs; also 1 process x N devices)
    jax.config.update("jax_num_cpu_devices", int(local))
  coordinator = os.environ.get(ENV_COORDINATOR)
  if coordinator:
    try:
      num_processes = int(os.environ[ENV_NUM_PROCESSES])
      process_id = int(os.environ[ENV_PROCESS_ID])
    except KeyError as e:
      raise RuntimeError(f"{ENV_COORDINATOR} is set but {e.args[0]} is not") from e
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
  elif _on_tpu_pod():
    jax.distributed.initialize()


def shutdown() -> None:
  """Stops `jax.distributed` if it was started, then leaves at once.

  On CPU, about 2% of runs stalled ~150 s at interpreter exit after shutdown (see
  shared/ENVIRONMENT.md), so a multi-process run exits with `os._exit(0)` right after it.
  """
  if jax.process_count() > 1:
    jax.distributed.shutdown()
    os._exit(0)  # pylint: disable=protected-access


# ---------------------------------------------------------------------------------------------
# Host-local rows <-> global arrays, and what the processes must agree on.
# ---------------------------------------------------------------------------------------------


def agree_max(value: int) -> int:
  """The largest `value` over all processes (identity with one process).

  Every shape a step compiles for (prompt bucket, feature frames) must be the same on every
  host; each host knows only its own rows, so each proposes its need and all take the max.
  A collective: every process must call it, in the same order.
  """
  if jax.process_count() == 1:
    return int(value)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(np.max(multihost_utils.process_allgather(np.asarray(value, np.int64))))


def local_rows(x: jax.Array | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(global row indices int64[L], rows [L, ...]) of the rows of `x` this process holds.

  Rows are in increasing order; a row held by several local devices (replicas) comes once.
  A numpy array is all local.
  """
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    x = np.asarray(jax.device_get(x))
    return np.arange(x.shape[0]), x
  pieces = {}
  for shard in x.addressable_shards:
    if any(i != slice(None) and i.indices(n) != (0, n, 1)
           for i, n in zip(shard.index[1:], x.shape[1:])):
      raise ValueError(f"local_rows: array {x.shape} is sharded beyond its first dimension "
                       f"({x.sharding})")
    rows = shard.index[0] if shard.index else slice(None)
    start, stop, _ = rows.indices(x.shape[0])
    pieces.setdefault(start, (stop, shard.data))
  index, data = [], []
  for start in sorted(pieces):
    stop, block = pieces[start]
    index.append(np.arange(start, stop))
    data.append(np.asarray(block))
  return np.concatenate(index), np.concatenate(data)


def host_rows(x: jax.Array | np.ndarray) -> np.ndarray:
  """This process's rows of a global array sharded (or replicated) on dim 0, as numpy (the
  inverse of `mesh.host_to_global`; with one process: the whole array)."""
  return local_rows(x)[1]


def gather_rows(local: np.ndarray) -> np.ndarray:
  """Every process's rows stacked in process order (each host passes its own [n_p, ...]).

  Hosts may hold different numbers of rows (an eval split's last items); every process gets the
  whole result. Identity with one process. A collective.
  """
  local = np.asarray(local)
  if jax.process_count() == 1:
    return local
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  counts = multihost_utils.process_allgather(np.asarray(local.shape[0], np.int64))
  width = int(np.max(counts))
  padded = np.zeros((width,) + local.shape[1:], local.dtype)
  padded[:local.shape[0]] = local
  stacked = np.asarray(multihost_utils.process_allgather(padded))  # [P, width, ...]
  return np.concatenate([stacked[p, :int(c)] for p, c in enumerate(counts)], axis=0)


class HostBlockSampler:
  """A grain sampler over this host's block of every global batch.

  grain's `ShardByJaxProcess` interleaves records over hosts (host p reads p, p + n, ...), so the
  global batch a multi-host step assembles (host blocks in process order) is a permutation of
  the one a single process reads. This wrapper gives host p, of each global batch of
  `global_batch` consecutive records of `sampler`, the contiguous block
  `[p * b, (p + 1) * b)` (b = global_batch / n): the assembled global batch is then exactly
  the single-process one, row for row, whatever the process count, so runs on 1 x 8 and
  2 x 4 devices see the same data in the same order. Use it with `NoSharding()` in the loader.
  """

  def __init__(self, sampler, global_batch: int, process_index: int | None = None,
               process_count: int | None = None):
    self._sampler = sampler
    self._n = jax.process_count() if process_count is None else process_count
    self._p = jax.process_index() if process_index is None else process_index
    if global_batch % self._n:
      raise ValueError(f"global batch {global_batch} is not divisible by the {self._n} processes")
    self._global = global_batch
    self._local = global_batch // self._n

  def _global_index(self, index: int) -> int:
    batch, within = divmod(index, self._local)
    return batch * self._global + self._p * self._local + within

  def __len__(self) -> int:
    total = len(self._sampler)
    full, rest = divmod(total, self._global)
    return full * self._local + max(0, min(self._local, rest - self._p * self._local))

  def __getitem__(self, index: int):
    if index < 0:
      raise IndexError(index)
    return self._sampler[self._global_index(index)]

  def __repr__(self) -> str:
    return (f"HostBlockSampler({self._sampler!r}, global_batch={self._global}, "
            f"process={self._p}/{self._n})")
