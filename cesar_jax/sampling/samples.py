"""`Samples`: what the sampler returns, per sequence and per token.

Rows are prompt-major: the `num_samples` completions of prompt b are rows b*G .. b*G+G-1
(GRPO groups contiguous, as `cesar_jax.rl.grpo` expects). Completions start right after the
prompt's `<|im_start|>assistant\\n`; a completion that stops keeps its stop token (counted in
`lengths`) and is padded with `pad_id` after it.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

# `finish_reason` codes.
FINISH_RUNNING = 0  # Never in a returned `Samples`.
FINISH_STOP = 1     # Emitted a stop id (`<|im_end|>` by default).
FINISH_LENGTH = 2   # Reached `max_new_tokens`.
FINISH_REASONS = {FINISH_RUNNING: "running", FINISH_STOP: "stop", FINISH_LENGTH: "length"}


@flax.struct.dataclass
class Samples:
  """Completions of a batch; arrays are jax arrays from the jitted core, numpy from `sample`.

  Attributes:
    tokens: int32[N, M] completion tokens, `pad_id` after the end (N = B * G rows).
    logprobs: f32[N, M] log-prob of each emitted token under the sampling distribution's
      full softmax (logits / temperature; T = 1 for greedy rows); forced tokens get the
      model's log-prob of the forced token; 0 after the end. GRPO's old log-probs.
    forced: bool[N, M] the budget put this token in (`</think>`, `<answer>`, or an extend
      continuation token such as "Wait").
    loss_mask: bool[N, M] emitted tokens the policy sampled: not forced, not padding (the
      stop token is in). GRPO's completion mask.
    lengths: int32[N] emitted tokens, stop token included.
    think_lengths: int32[N] tokens strictly inside `<think>` spans (see budgets.py).
    budget_forced: bool[N] the budget intervened at least once (cap or extension).
    finish_reason: int32[N] FINISH_STOP or FINISH_LENGTH.
    budgets: int32[N] the think budget each row ran under (< 0: none enforced).
    prompt_index: int32[N] which prompt of the batch (row // num_samples).
  """
  tokens: Any
  logprobs: Any
  forced: Any
  loss_mask: Any
  lengths: Any
  think_lengths: Any
  budget_forced: Any
  finish_reason: Any
  budgets: Any
  prompt_index: Any

  @property
  def num_sequences(self) -> int:
    return self.tokens.shape[0]

  @property
  def valid(self) -> jax.Array:
    """bool[N, M]: positions holding emitted tokens (before the padding)."""
    return jnp.arange(self.tokens.shape[1])[None, :] < jnp.asarray(self.lengths)[:, None]

  @property
  def finish_reasons(self) -> list[str]:
    return [FINISH_REASONS[int(r)] for r in np.asarray(self.finish_reason)]

  def to_numpy(self) -> "Samples":
    """numpy rows of this process (all rows with one process; see `distributed.host_rows`)."""
    from cesar_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
    return jax.tree.map(distributed.host_rows, self)

  def texts(self, tokenizer, skip_special_tokens: bool = False) -> list[str]:
    """Decoded completions (up to each row's length)."""
    tokens, lengths = np.asarray(self.tokens), np.asarray(self.lengths)
    return tokenizer.decode_batch([row[:n] for row, n in zip(tokens, lengths)],
                                  skip_special_tokens=skip_special_tokens)
