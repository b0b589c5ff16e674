"""One process of the loopback multi-process tests (run by test_distributed.py).

Prints one JSON line of what this process saw; the test compares the processes' lines.
"""

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
  out = {"process": pid, "processes": n, "devices": jax.device_count()}

  # Host-local rows -> one global array (host p has rows p*4 .. p*4+3 of [4n, 3]), and back.
  local = {"x": np.arange(pid * 12, pid * 12 + 12, dtype=np.float32).reshape(4, 3)}
  batch = mesh_lib.host_batch_to_global(local, mesh)
  out["global_shape"] = list(batch["x"].shape)
  out["total"] = float(jax.jit(lambda b: jnp.sum(b["x"] * 2.0))(batch))
  out["round_trip"] = bool(np.array_equal(distributed.host_rows(batch["x"]), local["x"]))

  # What the processes must agree on, and gathering uneven host results.
  out["agreed"] = distributed.agree_max(10 + 7 * pid)
  gathered = distributed.gather_rows(np.full((pid + 1, 2), pid, np.int32))
  out["gathered"] = gathered[:, 0].tolist()

  # The data each host reads: its block of every global batch.
  class Order:  # a sampler whose record k is record k
    def __len__(self):
      return 20

    def __getitem__(self, k):
      if k >= 20:
        raise IndexError(k)
      return k
  sampler = distributed.HostBlockSampler(Order(), global_batch=4)
  out["records"] = [sampler[k] for k in range(len(sampler))]

  # A batch the processes cannot split is an error naming the field.
  from cesar_jax.rl import train_lib  # pylint: disable=g-import-not-at-top
  try:
    train_lib.check_batch_layout(mesh, prompts=3, samples=1, grad_accum_steps=1,
                                 prefix=("data", "sampling", "grpo"))
    out["bad_batch_error"] = None
  except ValueError as e:
    out["bad_batch_error"] = str(e)
  print(json.dumps(out), flush=True)
  sys.stdout.flush()
  distributed.shutdown()


if __name__ == "__main__":
  main()
