"""One chip's attention forward + backward compiled for TPU: XLA's attention vs Pallas splash.

Needs libtpu (the `[tpu]` extra); no TPU: the programs are compiled for the abstract devices
of a v5e topology on this CPU host and read with `memory_analysis()`. The shapes are one
chip's share of the CESAR 7B GRPO update on v5e:8x8 (mesh (1, 8, 8)):

  decoder: 8 rows x 4 heads (32 / tensor 8) x head_dim 128, 320 completion queries (padded to
           384, splash's 128-blocks) over 1024 prefix + 384 own keys, causal within the own;
  encoder: one 30 s clip, 20 heads (not split 8 ways) x head_dim 64, 1500 frames padded to
           1536, full attention.

  python benchmarks/attention_memory.py        # both, printed as a table (docs/scaling.md)

Padding keys are masked by segment ids (0 = padding, 1 = real) in both implementations.
"""

from __future__ import annotations

import argparse
import os
import time

SHAPES = {  # rows, heads, head_dim, prefix keys, queries (= own keys), causal
    "decoder": (8, 4, 128, 1024, 384, True),
    "encoder": (1, 20, 64, 0, 1536, False),
}


def probe(rows: int, heads: int, head_dim: int, prefix: int, queries: int, causal: bool,
          topology: str = "v5e:2x4") -> dict[str, dict[str, float]]:
  """Temp / argument bytes, flops and compile seconds of grad(sum(attention ** 2)) per impl."""
  from cesar_jax import compile_check  # pylint: disable=g-import-not-at-top
  devices = compile_check.topology_devices(topology)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas.ops.tpu import splash_attention as sa  # pylint: disable=g-import-not-at-top

  mesh = jax.sharding.Mesh(np.array(devices), ("x",))
  spec = jax.sharding.PartitionSpec()
  replicated = jax.sharding.NamedSharding(mesh, spec)  # every chip computes its own share
  keys = prefix + queries
  scale = head_dim**-0.5

  def xla(q, k, v, seg_q, seg_k):  # q [N, M, H, D], k / v [N, T, H, D]
    mask = seg_q[:, :, None] == seg_k[:, None, :]
    if causal:
      mask &= jnp.arange(queries)[:, None] + prefix >= jnp.arange(keys)[None, :]
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], scale=scale)

  head_mask = (sa.CausalMask((queries, keys), offset=prefix) if causal
               else sa.FullMask((queries, keys)))
  kernel = sa.make_splash_mha(mask=sa.MultiHeadMask([head_mask] * heads), head_shards=1,
                              q_seq_shards=1)

  def splash(q, k, v, seg_q, seg_k):
    qh, kh, vh = (jnp.swapaxes(x, 1, 2) for x in (q * scale, k, v))  # [N, H, ., D]
    out = jax.vmap(kernel)(qh, kh, vh, segment_ids=sa.SegmentIds(q=seg_q, kv=seg_k))
    return jnp.swapaxes(out, 1, 2)

  # Mosaic kernels are not partitioned automatically: the kernel runs inside shard_map.
  impls = {"xla": xla, "splash": jax.shard_map(splash, mesh=mesh, in_specs=(spec,) * 5,
                                                out_specs=spec, check_vma=False)}
  bf16 = jnp.bfloat16
  args = [jax.ShapeDtypeStruct(s, d, sharding=replicated) for s, d in (
      ((rows, queries, heads, head_dim), bf16), ((rows, keys, heads, head_dim), bf16),
      ((rows, keys, heads, head_dim), bf16), ((rows, queries), jnp.int32),
      ((rows, keys), jnp.int32))]
  out = {}
  for name, fn in impls.items():
    def loss(q, k, v, seg_q, seg_k, fn=fn):
      return jnp.sum(fn(q, k, v, seg_q, seg_k).astype(jnp.float32) ** 2)
    start = time.perf_counter()
    with jax.set_mesh(mesh):
      compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(*args).compile()
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    out[name] = {"temp_bytes": float(memory.temp_size_in_bytes),
                 "argument_bytes": float(memory.argument_size_in_bytes),
                 "flops": float(cost.get("flops", 0.0)),
                 "compile_s": time.perf_counter() - start}
  return out


def main() -> None:
  argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
  print(f"attention forward + backward, one v5e chip; load average {os.getloadavg()[0]:.1f}")
  print("| shape | impl | temp MiB | argument MiB | GFLOP (cost_analysis) | compile s |")
  print("|---|---|---|---|---|---|")
  for shape, dims in SHAPES.items():
    for impl, r in probe(*dims).items():
      print(f"| {shape} {dims[:5]} | {impl} | {r['temp_bytes'] / 2**20:.1f} | "
            f"{r['argument_bytes'] / 2**20:.1f} | {r['flops'] / 1e9:.2f} | {r['compile_s']:.1f} |")


if __name__ == "__main__":
  main()
