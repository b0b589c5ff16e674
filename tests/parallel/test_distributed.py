"""Real `jax.distributed` with two CPU processes on loopback (gloo collectives)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

WORKER = pathlib.Path(__file__).with_name("multiprocess_worker.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_agree_on_a_global_sum():
  port = _free_port()
  procs = []
  for pid in range(2):
    env = dict(os.environ, CESAR_COORDINATOR=f"127.0.0.1:{port}", CESAR_NUM_PROCESSES="2",
               CESAR_PROCESS_ID=str(pid), CESAR_LOCAL_CPU_DEVICES="2", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    procs.append(subprocess.Popen([sys.executable, str(WORKER)], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    outs.append(json.loads(out.strip().splitlines()[-1]))
  expected = 2.0 * sum(range(24))  # Both hosts' rows, doubled.
  for pid, o in enumerate(outs):
    assert o["process"] == pid and o["processes"] == 2
    assert o["devices"] == 4 and o["global_shape"] == [8, 3]
    assert o["total"] == expected
