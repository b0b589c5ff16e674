"""Backend choice on machines with libtpu installed but no TPU attached (CPU hosts, CI).

With the `[tpu]` extra installed, JAX would try to start a TPU backend on a CPU host: libtpu
looks for chips, queries the GCE metadata server, and prints warnings about
TPU_ACCELERATOR_TYPE / TPU_WORKER_HOSTNAMES. `default_to_cpu()` (called when `cesar_jax` is
imported) avoids that: when libtpu is importable, no TPU chip is on the PCI bus and the user did
not choose (`JAX_PLATFORMS` unset), it selects the CPU backend. The compile_check job still
gets abstract TPU devices (`jax.experimental.topologies`), which need libtpu but no chip; it
sets libtpu's TPU_ACCELERATOR_TYPE / TPU_WORKER_HOSTNAMES itself, only then (not here: the
latter would make `parallel.distributed` think it runs on a pod).

Nothing changes where a TPU is attached, where libtpu is absent (GPU / plain CPU installs), or
where JAX_PLATFORMS is set.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

# Google's PCI vendor id: TPU chips appear on the PCI bus under it (as jax's hardware_utils).
_GOOGLE_PCI_VENDOR_ID = "0x1ae0"


def tpu_chips_present() -> bool:
  """Whether a TPU chip is attached (a Google PCI device, or a TPU device node)."""
  for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(path) as f:
        if f.read().strip() == _GOOGLE_PCI_VENDOR_ID:
          return True
    except OSError:
      continue
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def libtpu_installed() -> bool:
  return importlib.util.find_spec("libtpu") is not None


def default_to_cpu() -> str | None:
  """Selects the CPU backend when libtpu is installed without a TPU; returns what it set."""
  if "JAX_PLATFORMS" in os.environ or not libtpu_installed() or tpu_chips_present():
    return None
  os.environ["JAX_PLATFORMS"] = "cpu"
  jax = sys.modules.get("jax")
  if jax is not None:  # imported before us: its config read the environment already
    jax.config.update("jax_platforms", "cpu")
  return "cpu"
