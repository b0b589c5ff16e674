"""benchmarks/sampler.py: the decode-step limit arithmetic, and the JSON of a short real run."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import sys

import pytest

from cesar_jax.models import config as model_config
from cesar_jax.sampling import batching

REPO = pathlib.Path(__file__).resolve().parents[2]


def _load(name: str):
  """benchmarks/<name>.py as a module (benchmarks/ is scripts, not a package)."""
  if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
  spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


bench = _load("sampler")
machine_lib = bench.machine_lib  # the module the script itself uses

# The tiny preset's decoder, counted by hand: E = 64, F = 128, 2 layers, 4 heads x 16 = 64
# query width, 2 kv heads x 16 = 32 kv width, V = 512, untied head.
#   matrices per layer: q 64*64 + k 64*32 + v 64*32 + o 64*64 + gate/up/down 3*64*128 = 36864
#   params per layer: 36864 + biases (64 + 32 + 32) + two norms (2 * 64) = 37120
# Two rows, 10 slots each, a 20-slot cache (2 rows x 10), f32 weights and cache:
#   weights read: 2 * 37120 + final norm 64 + head 64*512 + 2 embedding rows * 64 = 107200
#                 elements = 428800 bytes
#   KV read: 2 layers * (K, V) * 32 * 20 slots * 4 bytes = 10240 bytes
#   matmul flops: 2 * (2 * 36864 + 64*512) * 2 rows = 425984
#   attention flops: 4 * 2 layers * 64 * 2 rows * 10 slots = 10240
TINY_STEP = dict(weight_bytes=428800, kv_bytes=10240, bytes=439040, matmul_flops=425984,
                 attention_flops=10240, flops=436224, params_touched=106496)


def test_decode_step_cost_of_tiny_counted_by_hand():
  cost = bench.decode_step_cost(model_config.preset("tiny").text, rows=2, attended_slots=10,
                                stored_slots=20, dtype_bytes=4, cache_bytes=4)
  assert cost == TINY_STEP


def test_decode_step_cost_tied_head_bf16_and_shared_slots():
  text = model_config.preset("tiny", tie_word_embeddings=True).text
  # Tied: the table is read whole by the head, no separate gather: 2 * 37120 + 64 + 32768
  # = 107072 elements, 2 bytes each. A bf16 cache storing 12 (row, slot) pairs (e.g. a prompt's
  # slots shared by its rows): 2 * 2 * 32 * 12 * 2 bytes.
  cost = bench.decode_step_cost(text, rows=2, attended_slots=10, stored_slots=12,
                                dtype_bytes=2, cache_bytes=2)
  assert cost["weight_bytes"] == 2 * 107072
  assert cost["kv_bytes"] == 3072
  assert cost["flops"] == TINY_STEP["flops"]  # the same multiplies, tied or not


def _machine(l3_bytes: int) -> "machine_lib.Machine":
  return machine_lib.Machine(device="test", dram_bandwidth=1e10, cache_bandwidth=1e11,
                             copy_bandwidth=2e10, square_matmul=1e9,
                             decode_matmul={(2, 64, 128): 4e9}, l3_bytes=l3_bytes)


def test_step_limit_takes_the_larger_of_memory_and_compute():
  # In cache (439040 B <= 1 MB): 439040 / 1e11 = 4.4 us of memory vs 436224 / 4e9 (the decode
  # shape's rate beats the square one's) = 109 us of compute.
  limit = bench.step_limit(TINY_STEP, _machine(2**20), (2, 64, 128))
  assert limit["limit_kind"] == "compute" and limit["bandwidth_kind"] == "cache"
  assert limit["limit_step_s"] == pytest.approx(436224 / 4e9)
  assert limit["memory_s"] == pytest.approx(439040 / 1e11)
  # Past L3 (1 kB): DRAM at the better of read and copy (2e10): 22 us; a shape not measured
  # falls back to the square matmul (1e9): 436 us, still compute.
  limit = bench.step_limit(TINY_STEP, _machine(1024), (8, 64, 128))
  assert limit["bandwidth_kind"] == "dram" and limit["bandwidth_Bps"] == 2e10
  assert limit["limit_step_s"] == pytest.approx(436224 / 1e9)
  # A slow memory makes it memory-bound.
  slow = machine_lib.Machine(device="test", dram_bandwidth=1e6, cache_bandwidth=1e6,
                             copy_bandwidth=1e6, square_matmul=1e9, decode_matmul={},
                             l3_bytes=0)
  limit = bench.step_limit(TINY_STEP, slow)
  assert limit["limit_kind"] == "memory"
  assert limit["limit_step_s"] == pytest.approx(439040 / 1e6)


# groups (B prompts x G samples) is the fast default: its cache layout is the one that changes
# (shared prompt slots); distinct adds ~10 s more of compiles and transformers calls.
@pytest.mark.parametrize("mode", ["groups", pytest.param("distinct", marks=pytest.mark.slow)])
def test_short_run_json(tmp_path, mode):
  rows = 2
  out_path = tmp_path / "sampler.json"
  bench.main(["--configs", "tiny", "--modes", mode, "--batch", str(rows), "--group_size", "2",
              "--new_tokens", "4", "--clip_seconds", "2", "--repeats", "1",
              "--machine_repeats", "1", "--dram_mib", "64", "--json", str(out_path)])
  out = json.loads(out_path.read_text())
  assert len(out["load_average"]) == 3 and out["machine"]["square_matmul_flops"] > 0
  [r] = out["rows"]
  assert (r["config"], r["mode"], r["batch"]) == ("tiny", mode, rows)
  # A 4-token call minus a 1-token call: it may come out negative on a busy machine.
  assert r["prefill_s"] > 0 and math.isfinite(r["decode_step_s"])
  assert r["limit_step_s"] == max(r["memory_s"], r["compute_s"]) > 0
  assert r["limit_kind"] == ("memory" if r["memory_s"] >= r["compute_s"] else "compute")
  # The cache the sampler built: a prompt bucket P + 4 decode slots per row; the prompt's P
  # slots are stored once per prompt (a group of 2 rows shares them), the 4 once per row.
  attended, stored = r["cache_slots_attended"], r["cache_slots_stored"]
  prompt = attended - 4
  assert prompt in batching.DEFAULT_PROMPT_BUCKETS
  prompts = rows // 2 if mode == "groups" else rows
  assert stored == prompts * prompt + rows * 4
  cost = bench.decode_step_cost(model_config.preset("tiny").text, rows=rows,
                                attended_slots=attended, stored_slots=stored, dtype_bytes=4,
                                cache_bytes=4)
  assert r["bytes_per_step"] == cost["bytes"] and r["flops_per_step"] == cost["flops"]
  assert r["memory_s"] == pytest.approx(cost["bytes"] / r["bandwidth_Bps"])
  assert r["compute_s"] == pytest.approx(cost["flops"] / r["matmul_peak_flops"])
