"""Real `jax.distributed` with two CPU processes on loopback (gloo collectives)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

from cesar_jax.parallel import distributed

WORKER = pathlib.Path(__file__).with_name("multiprocess_worker.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def outs():
  port = _free_port()
  procs = []
  for pid in range(2):
    env = dict(os.environ, CESAR_COORDINATOR=f"127.0.0.1:{port}", CESAR_NUM_PROCESSES="2",
               CESAR_PROCESS_ID=str(pid), CESAR_LOCAL_CPU_DEVICES="2", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(WORKER.parents[2]))
    env.pop("XLA_FLAGS", None)
    procs.append(subprocess.Popen([sys.executable, str(WORKER)], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  results = []
  for p in procs:
    out, err = p.communicate(timeout=180)
    assert p.returncode == 0, err[-2000:]
    results.append(json.loads(out.strip().splitlines()[-1]))
  return results


def test_two_processes_build_one_global_batch_from_their_rows(outs):
  expected = 2.0 * sum(range(24))  # Both hosts' rows, doubled.
  for pid, o in enumerate(outs):
    assert o["process"] == pid and o["processes"] == 2
    assert o["devices"] == 4 and o["global_shape"] == [8, 3]
    assert o["total"] == expected and o["round_trip"]


def test_processes_agree_on_shapes_and_gather_uneven_rows(outs):
  for o in outs:
    assert o["agreed"] == 17  # max(10, 17)
    assert o["gathered"] == [0, 1, 1]  # process 0's one row, then process 1's two


def test_each_host_reads_its_block_of_every_global_batch(outs):
  # Global batches of 4: [0 1 2 3] [4 5 6 7] ...; host 0 reads the first two of each.
  assert outs[0]["records"] == [0, 1, 4, 5, 8, 9, 12, 13, 16, 17]
  assert outs[1]["records"] == [2, 3, 6, 7, 10, 11, 14, 15, 18, 19]


def test_a_batch_the_processes_cannot_split_names_the_field(outs):
  for o in outs:
    assert "config.data.batch_size = 3 is not divisible by the 2 processes" in o["bad_batch_error"]


def test_host_block_sampler_is_the_single_process_order_and_checks_the_batch():
  records = list(range(13))
  hosts = [distributed.HostBlockSampler(records, 4, process_index=p, process_count=2)
           for p in range(2)]
  blocks = [[h[k] for k in range(len(h))] for h in hosts]
  # Record 12 starts a partial global batch: it falls in host 0's block, so host 0 reads it.
  assert blocks == [[0, 1, 4, 5, 8, 9, 12], [2, 3, 6, 7, 10, 11]]
  assert "HostBlockSampler" in repr(hosts[1]) and "process=1/2" in repr(hosts[1])
  with pytest.raises(ValueError, match="global batch 5 is not divisible by the 2 processes"):
    distributed.HostBlockSampler(records, 5, process_index=0, process_count=2)
