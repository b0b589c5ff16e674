"""Test-wide setup: 8 forced host CPU devices (for sharding tests), offline Hugging Face, parsed absl flags.

Runs before any test module imports jax, so the device count takes effect.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

from absl import flags  # noqa: E402

# grain's worker processes read absl flags; pytest never parses them.
flags.FLAGS.mark_as_parsed()

import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
  """`../shared` beside the checkout (CI has it); tests that need it skip, saying why, without it."""
  if not SHARED_DIR.is_dir():
    pytest.skip(f"needs the shared/ folder beside the checkout ({SHARED_DIR} does not exist)")
  return SHARED_DIR
