"""benchmarks/attention_memory.py: both attentions compile for TPU here and splash holds less."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

from cesar_jax import platforms

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not platforms.libtpu_installed(),
                    reason="needs libtpu for abstract TPU devices: pip install -e '.[tpu]'")
@pytest.mark.parametrize("shape", ["decoder", "encoder"])
def test_splash_holds_fewer_temporaries_than_xla_attention(shape):
  sys.path.insert(0, str(REPO))
  spec = importlib.util.spec_from_file_location("bench_attention_memory",
                                                REPO / "benchmarks" / "attention_memory.py")
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  rows, heads, head_dim, prefix, queries, causal = bench.SHAPES[shape]
  result = bench.probe(rows, heads, head_dim, prefix, queries, causal)
  assert set(result) == {"xla", "splash"}
  # Same inputs, so the same argument bytes; XLA materialises the [N, H, M, T] scores.
  assert result["xla"]["argument_bytes"] == result["splash"]["argument_bytes"]
  scores = rows * heads * queries * (prefix + queries) * 4  # f32 bytes of the score array
  assert result["xla"]["temp_bytes"] >= scores
  assert result["splash"]["temp_bytes"] < scores / 10  # blocks in VMEM, nothing of that size
