"""Outcome rewards (the RLVR baseline's two terms): accuracy and format, on token ids.

Definitions: `reference.format_reward`, `reference.accuracy_reward`. Presets using only these:
"outcome" (1, 1) and "ke_omni_r" (2, 1), see `config.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from cesar_jax.rewards import parse as parse_lib
from cesar_jax.rewards import registry


@registry.register("format")
def format_reward(batch: parse_lib.Batch, config: ml_collections.FrozenConfigDict) -> jax.Array:
  """1 when `<think>..</think><answer>..</answer>` (or the answer-only form) is well formed."""
  del config
  return batch.parsed.format_ok.astype(jnp.float32)


@registry.register("accuracy")
def accuracy_reward(batch: parse_lib.Batch, config: ml_collections.FrozenConfigDict) -> jax.Array:
  """1 when the answer chooses the correct option (letter, text, or both)."""
  del config
  p = batch.parsed
  return ((p.chosen >= 0) & (p.chosen == batch.examples["answer_index"])).astype(jnp.float32)
