"""One process of the loopback multi-process test (run by test_distributed.py)."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from cesar_jax.parallel import distributed
from cesar_jax.parallel import mesh as mesh_lib


def main() -> None:
  distributed.initialize()
  pid, n = jax.process_index(), jax.process_count()
  mesh = mesh_lib.make_mesh((1, -1, 1))
  # Each host holds its own rows: host p has rows p*4 .. p*4+3 of a global [4n, 3] array.
  local = {"x": np.arange(pid * 12, pid * 12 + 12, dtype=np.float32).reshape(4, 3)}
  batch = mesh_lib.host_batch_to_global(local, mesh)
  total = jax.jit(lambda b: jnp.sum(b["x"] * 2.0))(batch)
  print(json.dumps({"process": pid, "processes": n, "devices": jax.device_count(),
                    "global_shape": list(batch["x"].shape), "total": float(total)}), flush=True)
  sys.stdout.flush()
  distributed.shutdown()


if __name__ == "__main__":
  main()
