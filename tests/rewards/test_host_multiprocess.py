"""Python rewards with two real processes (loopback): each scores only the rows it holds, and
the totals equal one process scoring all rows."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from cesar_jax import rewards

import host_fixtures

pytestmark = pytest.mark.slow  # two processes compiling the reward (~30 s on 2 cores)
WORKER = pathlib.Path(__file__).with_name("host_worker.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_score_their_own_rows(builtin_tok):
  port = _free_port()
  procs = []
  for pid in range(2):
    env = dict(os.environ, CESAR_COORDINATOR=f"127.0.0.1:{port}", CESAR_NUM_PROCESSES="2",
               CESAR_PROCESS_ID=str(pid), CESAR_LOCAL_CPU_DEVICES="2", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(WORKER.parent), os.environ.get("PYTHONPATH", "")]))
    env.pop("XLA_FLAGS", None)
    procs.append(subprocess.Popen([sys.executable, str(WORKER)], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    outs.append(json.loads(out.strip().splitlines()[-1]))
  examples, texts = host_fixtures.data()
  per_row = [examples[i // 2] for i in range(16)]
  want = rewards.reference.score_texts(texts, per_row, rewards.default_config("mpar2"),
                                       builtin_tok)
  assert len(np.unique(want["perception"])) > 2
  for o in outs:
    assert o["local_rows"] == 8  # Its half, once (the tensor-axis replica not twice).
    for k in want:
      np.testing.assert_allclose(o["out"][k], want[k], rtol=1e-6, err_msg=k)
