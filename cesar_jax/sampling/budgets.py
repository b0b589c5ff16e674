"""Per-sequence reasoning budgets: a small state machine on token ids.

A completion starts right after the prompt's `<|im_start|>assistant\\n`. The tags `<think>`,
`</think>`, `<answer>` are single tokens, so the state after each token is a function of the
previous state and that token id; it runs inside the sampler's jitted loop, vectorised over
the batch.

Definitions (these are what tests and `Samples` report):

* **think length**: the number of completion tokens strictly inside `<think> ... </think>`
  spans (the tags themselves are not counted). A span left open (never closed, or cut by
  `max_new_tokens`) counts up to the last token. A model that never opens `<think>` has think
  length 0. If the model opens a second span, its tokens add to the same count, so the
  budget bounds the total.
* **budget** `L` (int32 per sequence): `L < 0` means no limit (the sampler never intervenes;
  this is "prompted" mode, where the budget only appears in the prompt text).
* **forcing** (`L >= 0`): as soon as a sequence has `L` think tokens and is still inside
  `<think>`, its next two tokens are forced to `</think>` `<answer>`; sampling then resumes
  for the answer. The model opening `<think>` when `L = 0` forces the same two tokens at once.
* **budget 0**: the first completion token is forced to `<answer>` (the reward's answer-only
  form `<answer>...</answer>`), so the answer is requested directly.

A forced position is flagged so GRPO can leave it out of the loss; its log-prob is still the
model's log-prob of the forced token.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

NO_BUDGET = -1  # A budget < 0: never force (prompted mode, or plain sampling).

# `BudgetState.pending`: forced tokens still queued.
_PENDING_NONE, _PENDING_ANSWER, _PENDING_CLOSE_THEN_ANSWER = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class TagIds:
  """The reasoning tags' token ids (static: fixed by the tokenizer)."""
  think_open: int
  think_close: int
  answer_open: int

  @classmethod
  def from_tokenizer(cls, tokenizer) -> "TagIds":
    return cls(think_open=tokenizer.think_open_id, think_close=tokenizer.think_close_id,
               answer_open=tokenizer.answer_open_id)


@flax.struct.dataclass
class BudgetState:
  """Per-sequence budget state.

  Attributes:
    in_think: bool[B], the last token is inside an open `<think>` span.
    think_length: int32[B], think tokens so far (see module docstring).
    pending: int32[B], forced tokens still queued: 0 none, 1 `<answer>`, 2 `</think><answer>`.
    budget_forced: bool[B], the sampler has intervened (or will, for queued tokens).
  """
  in_think: jax.Array
  think_length: jax.Array
  pending: jax.Array
  budget_forced: jax.Array


def init(budgets: jax.Array) -> BudgetState:
  """The state before the first completion token. budgets: int32[B]."""
  budgets = jnp.asarray(budgets, jnp.int32)
  answer_now = budgets == 0
  return BudgetState(
      in_think=jnp.zeros(budgets.shape, bool),
      think_length=jnp.zeros(budgets.shape, jnp.int32),
      pending=jnp.where(answer_now, _PENDING_ANSWER, _PENDING_NONE).astype(jnp.int32),
      budget_forced=answer_now,
  )


def forced_tokens(state: BudgetState, tags: TagIds) -> tuple[jax.Array, jax.Array]:
  """Whether the next token is forced, and which. Returns (bool[B], int32[B])."""
  token = jnp.where(state.pending == _PENDING_CLOSE_THEN_ANSWER, tags.think_close,
                    tags.answer_open).astype(jnp.int32)
  return state.pending > _PENDING_NONE, token


def update(state: BudgetState, tokens: jax.Array, budgets: jax.Array, tags: TagIds,
           active: jax.Array | None = None) -> BudgetState:
  """The state after emitting `tokens` (int32[B], forced or sampled).

  Args:
    state: the state before `tokens`.
    tokens: int32[B], the token each sequence emits now.
    budgets: int32[B], think budgets (< 0: never force).
    tags: the tag ids.
    active: bool[B]; rows where it is False keep their state (finished sequences).
  """
  opens = tokens == tags.think_open
  closes = tokens == tags.think_close
  think_length = state.think_length + (state.in_think & ~closes).astype(jnp.int32)
  in_think = (state.in_think | opens) & ~closes
  pending = jnp.maximum(state.pending - 1, _PENDING_NONE)
  limit = (budgets >= 0) & in_think & (think_length >= budgets) & (pending == _PENDING_NONE)
  new = BudgetState(
      in_think=in_think,
      think_length=think_length,
      pending=jnp.where(limit, _PENDING_CLOSE_THEN_ANSWER, pending).astype(jnp.int32),
      budget_forced=state.budget_forced | limit,
  )
  if active is None:
    return new
  return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state)


def think_lengths(tokens: jax.Array, tags: TagIds) -> jax.Array:
  """Think length of finished completions (int32[B, T] -> int32[B]), without the loop.

  The same definition as the state machine: tokens strictly inside `<think>` spans. Used by
  tests and by callers that score completions produced elsewhere. Padding after the end must
  not contain tags.
  """
  opens = (tokens == tags.think_open).astype(jnp.int32)
  closes = (tokens == tags.think_close).astype(jnp.int32)
  # Inside after position t iff the last tag at or before t is an (unclosed) <think>: the
  # index of the last open must exceed the index of the last close.
  idx = jnp.arange(tokens.shape[-1])[None, :]
  last_open = jax.lax.cummax(jnp.where(opens > 0, idx, -1), axis=1)
  last_close = jax.lax.cummax(jnp.where(closes > 0, idx, -1), axis=1)
  inside_before = jnp.pad((last_open > last_close)[:, :-1], ((0, 0), (1, 0)))
  return jnp.sum(inside_before & (closes == 0), axis=-1).astype(jnp.int32)
