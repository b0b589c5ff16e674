"""Published TPU chip figures (per chip) and topology names, for the compile check's roofline.

  chip = chips.chip_for_topology("v5e:8x8")     # ChipSpec of TPU v5e
  chips.num_chips("v5p:2x2x2")                  # 8
  chip.roofline_s(flops, bytes_accessed)        # max(flops / peak, bytes / HBM bandwidth)

Figures are Google Cloud's published per-chip numbers (bf16 dense peak, HBM capacity, HBM
bandwidth), each with its page below. A roofline time is a lower bound: it ignores ICI
collectives, latency and imperfect overlap.
"""

from __future__ import annotations

import dataclasses
import math

GiB = 1024**3


@dataclasses.dataclass(frozen=True)
class ChipSpec:
  """One TPU generation's per-chip figures.

  Attributes:
    name: the topology prefix (`v5e` in `v5e:8x8`).
    bf16_flops: peak dense bf16 FLOP/s per chip.
    hbm_bytes: HBM capacity per chip.
    hbm_bandwidth: HBM bytes/s per chip.
    accelerator_type: libtpu's `TPU_ACCELERATOR_TYPE` name pattern (`{n}` chips, `{c}` cores).
    source: where the figures are published.
  """
  name: str
  bf16_flops: float
  hbm_bytes: int
  hbm_bandwidth: float
  accelerator_type: str
  source: str

  def roofline_s(self, flops: float, bytes_accessed: float, devices_per_chip: int = 1) -> float:
    """Seconds at the roofline of ONE device: max(compute time, HBM time)."""
    share = 1.0 / devices_per_chip
    return max(flops / (self.bf16_flops * share), bytes_accessed / (self.hbm_bandwidth * share))


CHIPS: dict[str, ChipSpec] = {
    "v4": ChipSpec("v4", 275e12, 32 * GiB, 1200e9, "v4-{c}",
                   "https://cloud.google.com/tpu/docs/v4 (275 TFLOPs bf16, 32 GiB HBM2, "
                   "1200 GBps)"),
    "v5e": ChipSpec("v5e", 197e12, 16 * GiB, 819e9, "v5litepod-{n}",
                    "https://cloud.google.com/tpu/docs/v5e (197 TFLOPs bf16, 16 GiB HBM2, "
                    "819 GBps)"),
    "v5p": ChipSpec("v5p", 459e12, 95 * GiB, 2765e9, "v5p-{c}",
                    "https://cloud.google.com/tpu/docs/v5p (459 TFLOPs bf16, 95 GiB HBM2e, "
                    "2765 GBps)"),
    "v6e": ChipSpec("v6e", 918e12, 32 * GiB, 1640e9, "v6e-{n}",
                    "https://cloud.google.com/tpu/docs/v6e (918 TFLOPs bf16, 32 GiB HBM, "
                    "1640 GBps)"),
}

# Megacore chips (two TensorCores presented as one device): accelerator names count cores.
_CORES_PER_CHIP = {"v4": 2, "v5p": 2, "v5e": 1, "v6e": 1}


def parse_topology(topology: str) -> tuple[str, tuple[int, ...]]:
  """`"v5e:8x8"` -> ("v5e", (8, 8)); an error naming the known generations otherwise."""
  name, sep, dims = topology.partition(":")
  try:
    shape = tuple(int(d) for d in dims.split("x"))
  except ValueError:
    shape = ()
  if not sep or name not in CHIPS or not shape or min(shape) < 1:
    raise ValueError(f"TPU topology {topology!r}: expected GENERATION:AxB[xC] with GENERATION "
                     f"one of {sorted(CHIPS)}, e.g. 'v5e:8x8' or 'v5p:2x2x2'")
  return name, shape


def chip_for_topology(topology: str) -> ChipSpec:
  return CHIPS[parse_topology(topology)[0]]


def num_chips(topology: str) -> int:
  return math.prod(parse_topology(topology)[1])


def accelerator_type(topology: str) -> str:
  """libtpu's TPU_ACCELERATOR_TYPE for a topology, e.g. v5e:8x8 -> v5litepod-64."""
  name, _ = parse_topology(topology)
  n = num_chips(topology)
  return CHIPS[name].accelerator_type.format(n=n, c=n * _CORES_PER_CHIP[name])
