"""Outcome rewards (the RLVR baseline's two terms): accuracy and format, on token ids.

Definitions: `reference.format_reward`, `reference.accuracy_reward`. Presets using only these:
"outcome" (1, 1) and "ke_omni_r" (2, 1), see `config.py`. Also Audio-Thinker's adaptive
think-accuracy reward (`think_accuracy`, preset "audio_thinker").
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


@registry.register("think_accuracy")
def think_accuracy_reward(batch: parse_lib.Batch,
                          config: ml_collections.FrozenConfigDict) -> jax.Array:
  """Audio-Thinker's adaptive think-accuracy reward: +1 thinks and correct, 0 thinks and wrong,
  +2 no think and correct, -1 no think and wrong.

  "Thinks" (the project's reading; Audio-Thinker does not define it on text): at least one
  token between the first `<think>` and the first `</think>`, which must come after it. The
  rest of the format is not required: a malformed completion without a think part counts as
  "no think"; the format reward (0 for it) is what separates it from a well-formed
  `<think></think><answer>..</answer>` or answer-only reply.
  """
  del config
  sc = batch.parsed.scan
  closed = sc.think_close < batch.ids.shape[1]  # T when absent.
  thinks = closed & (sc.think_close > sc.think_open + 1)
  acc = accuracy_reward(batch, None)
  return jnp.where(thinks, acc, 3.0 * acc - 1.0)
