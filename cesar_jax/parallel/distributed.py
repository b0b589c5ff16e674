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
  return bool(os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID"))


def initialize() -> None:
  """Starts `jax.distributed` when the environment asks for several processes."""
  coordinator = os.environ.get(ENV_COORDINATOR)
  if coordinator:
    local = os.environ.get(ENV_LOCAL_DEVICES)
    if local:
      jax.config.update("jax_num_cpu_devices", int(local))
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


def host_local_to_global(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh,
                         spec: jax.sharding.PartitionSpec):
  """Assembles each host's slice of a batch into global arrays sharded by `spec` on `mesh`."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(
          jax.sharding.NamedSharding(mesh, spec), np.asarray(x)), batch)
