"""What this machine can do, measured with JAX: memory bandwidth and f32 matmul rate.

The sampler benchmark (benchmarks/sampler.py) compares a decode step with the least time
this machine needs for it: max(bytes read / bandwidth, flops / matmul rate). Both rates are
measured here rather than read from a data sheet, with jitted XLA programs on the default
device (the CPU here), each the best of `repeats` calls after a compile call:

  bandwidth(nbytes)       row sums over an f32 array of `nbytes` (reads it once): bytes / s.
                          Pass an array well past the last-level cache (DRAM, the default 256
                          MB is 8x this machine's 32 MB L3) or one well inside it (the cache).
  copy_bandwidth(nbytes)  `x * 2` in place (reads and writes `nbytes`): 2 * nbytes / s.
  matmul_rate(m, k, n)    f32[m, k] @ f32[k, n]: 2 m k n / s. Small shapes (a decode's
                          [rows, hidden] @ [hidden, ffn]) include the call's dispatch time.

  from benchmarks import machine
  m = machine.measure(decode_shapes=[(32, 512, 1408)])
  print(machine.describe(m))

Everything is best-of-repeats: on a shared machine other jobs only ever slow a call down.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

DRAM_BYTES = 256 * 2**20    # 8x this machine's L3
CACHE_BYTES = 4 * 2**20     # fits in L3 (32 MB), not in one core's L2 (2 MB)
SQUARE = 2048               # the large square matmul's side


def best_time(fn: Callable[[], object], repeats: int) -> float:
  """Best wall seconds of `repeats` calls of `fn` (its result blocked on), after one warm-up call."""
  if repeats < 1:
    raise ValueError(f"best_time: repeats must be >= 1, got {repeats}")
  jax.block_until_ready(fn())
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - start)
  return best


def bandwidth(nbytes: int = DRAM_BYTES, repeats: int = 10) -> float:
  """Read bandwidth in bytes / s: a jitted sum over an f32 array of `nbytes`."""
  x = jnp.ones((max(1, nbytes // 4),), jnp.float32)
  rows = 256 if x.size % 256 == 0 else 1  # row sums split over threads (a bit faster here)
  fn = jax.jit(lambda a: jnp.sum(a.reshape(rows, -1), axis=1))
  return x.nbytes / best_time(lambda: fn(x), repeats)


def copy_bandwidth(nbytes: int = DRAM_BYTES, repeats: int = 10) -> float:
  """Read + write bandwidth in bytes / s: a jitted `x * 2` over an f32 array of `nbytes`."""
  # The input is donated and replaced by the output, so no call allocates (and page-faults)
  # a fresh `nbytes` buffer: only the copy is timed.
  state = {"x": jnp.ones((max(1, nbytes // 4),), jnp.float32)}
  fn = jax.jit(lambda a: a * 2.0, donate_argnums=0)

  def call():
    state["x"] = fn(state["x"])
    return state["x"]

  return 2 * state["x"].nbytes / best_time(call, repeats)


def matmul_rate(m: int, k: int, n: int, repeats: int = 10) -> float:
  """f32 matmul flops / s for [m, k] @ [k, n] (2 m k n flops a call)."""
  kx, ky = jax.random.split(jax.random.key(0))
  a = jax.random.normal(kx, (m, k), jnp.float32)
  b = jax.random.normal(ky, (k, n), jnp.float32)
  fn = jax.jit(jnp.matmul)
  return 2.0 * m * k * n / best_time(lambda: fn(a, b), repeats)


def l3_bytes(default: int = 32 * 2**20) -> int:
  """The last-level cache size from sysfs (Linux), else `default`."""
  path = pathlib.Path("/sys/devices/system/cpu/cpu0/cache/index3/size")
  try:
    text = path.read_text().strip().upper()
  except OSError:
    return default
  scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
  try:
    return int(text.rstrip("KMG")) * scale
  except ValueError:
    return default


@dataclasses.dataclass(frozen=True)
class Machine:
  """Measured rates. `decode_matmul` maps an (m, k, n) shape to its flops / s."""
  device: str
  dram_bandwidth: float       # bytes / s, read, array 8x L3
  cache_bandwidth: float      # bytes / s, read, array inside L3
  copy_bandwidth: float       # bytes / s, read + write, array 8x L3
  square_matmul: float        # flops / s, f32 SQUARE^3
  decode_matmul: dict[tuple[int, int, int], float]
  l3_bytes: int
  dram_bytes: int = DRAM_BYTES  # the DRAM measurements' array size

  def bandwidth_for(self, nbytes: float) -> tuple[float, str]:
    """(bytes / s, "cache" or "dram") for a working set of `nbytes` read each step: the cache
    rate when it fits in L3, else the DRAM one (the larger of the read and copy rates)."""
    if nbytes <= self.l3_bytes:
      return self.cache_bandwidth, "cache"
    return max(self.dram_bandwidth, self.copy_bandwidth), "dram"

  def matmul_peak(self, shape: tuple[int, int, int] | None = None) -> float:
    """The best measured f32 rate: the square matmul's, or the decode shape's if higher."""
    rate = self.square_matmul
    if shape is not None and shape in self.decode_matmul:
      rate = max(rate, self.decode_matmul[shape])
    return rate

  def to_json(self) -> dict:
    return {
        "device": self.device, "dram_bandwidth_Bps": self.dram_bandwidth,
        "cache_bandwidth_Bps": self.cache_bandwidth, "copy_bandwidth_Bps": self.copy_bandwidth,
        "square_matmul_flops": self.square_matmul, "square_matmul_shape": [SQUARE] * 3,
        "decode_matmul_flops": [{"shape": list(s), "flops": r}
                                for s, r in self.decode_matmul.items()],
        "l3_bytes": self.l3_bytes, "dram_array_bytes": self.dram_bytes,
    }


def measure(decode_shapes: Sequence[tuple[int, int, int]] = (), *, repeats: int = 10,
            dram_bytes: int = DRAM_BYTES, square: int = SQUARE) -> Machine:
  """Measures every rate once (a few seconds on 2 cores); `decode_shapes` are (m, k, n)."""
  l3 = l3_bytes()
  return Machine(
      device=f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind}) x{jax.device_count()}",
      dram_bandwidth=bandwidth(dram_bytes, repeats),
      cache_bandwidth=bandwidth(min(CACHE_BYTES, l3 // 4), 5 * repeats),
      copy_bandwidth=copy_bandwidth(dram_bytes, repeats),
      square_matmul=matmul_rate(square, square, square, max(2, repeats // 3)),
      decode_matmul={tuple(s): matmul_rate(*s, repeats=5 * repeats) for s in decode_shapes},
      l3_bytes=l3, dram_bytes=dram_bytes)


def describe(m: Machine) -> str:
  """Lines for the top of a benchmark's output."""
  gb, gf = 1e9, 1e9
  lines = [f"machine: {m.device}, L3 {m.l3_bytes / 2**20:.0f} MiB (JAX-measured, best of repeats)",
           f"  memory: read {m.dram_bandwidth / gb:.1f} GB/s (array {m.dram_bytes / 2**20:.0f} MiB), "
           f"copy {m.copy_bandwidth / gb:.1f} GB/s, in-cache read {m.cache_bandwidth / gb:.1f} GB/s",
           f"  f32 matmul: {m.square_matmul / gf:.1f} GFLOP/s at {SQUARE}^3"]
  for shape, rate in m.decode_matmul.items():
    lines.append(f"  f32 matmul: {rate / gf:.1f} GFLOP/s at [{shape[0]}, {shape[1]}] @ "
                 f"[{shape[1]}, {shape[2]}] (a decode step's MLP)")
  return "\n".join(lines)


if __name__ == "__main__":
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  from cesar_jax import platforms  # pylint: disable=g-import-not-at-top
  platforms.default_to_cpu()  # with libtpu installed and no chip, the CPU (as the package does)
  print(describe(measure(decode_shapes=[(32, 512, 1408), (32, 64, 128)])))
  print(f"numpy {np.__version__}, jax {jax.__version__}")
