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
* **mode** (int32 per sequence, traced, so one batch mixes them): `MODE_CAP` or `MODE_EXTEND`.
* **cap** (`MODE_CAP`, the config's "forced"; CESAR's L_max): as soon as a sequence has `L`
  think tokens and is still inside `<think>`, its next two tokens are forced to `</think>`
  `<answer>`; sampling then resumes for the answer. The model opening `<think>` when `L = 0`
  forces the same two tokens at once.
* **extend** (`MODE_EXTEND`; s1's budget forcing, Muennighoff et al. 2025, arXiv 2501.19393):
  the cap, plus: when the sequence would close `</think>` with fewer than `L` think tokens, the
  `</think>` is replaced by the continuation's first token (s1: "Wait") and the rest of the
  continuation is queued; the model then goes on thinking. So a row that opens `<think>` ends
  with exactly `L` think tokens (unless it stops or runs out of `max_new_tokens` inside the
  span). Continuation tokens count as think tokens; when the budget is reached in the middle
  of a continuation, the cap's `</think><answer>` replaces its rest. A row that never opens
  `<think>` (or stops inside it) is not extended.
* **budget 0** (both modes): the first completion token is forced to `<answer>` (the reward's
  answer-only form `<answer>...</answer>`), so the answer is requested directly.

Every token the sampler puts in (forced tags, continuation tokens) is flagged `forced`, so
GRPO leaves it out of the loss; its log-prob is still the model's log-prob of that token.

The queue of forced tokens is `int32[B, Q]` (-1 = empty slot), Q static: 2 for the cap's
`</think><answer>`, or the continuation's length minus one if longer.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

NO_BUDGET = -1  # A budget < 0: never force (prompted mode, or plain sampling).
MODE_CAP, MODE_EXTEND = 0, 1  # Per-row budget modes (traced int32).
MODE_IDS = {"forced": MODE_CAP, "cap": MODE_CAP, "extend": MODE_EXTEND}
_EMPTY = -1  # An empty queue slot.


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
    queue: int32[B, Q], forced tokens still queued, next first; -1 marks empty slots.
    budget_forced: bool[B], the sampler has intervened (or will, for queued tokens).
    extensions: int32[B], early `</think>`s replaced by the continuation (extend mode).
  """
  in_think: jax.Array
  think_length: jax.Array
  queue: jax.Array
  budget_forced: jax.Array
  extensions: jax.Array

  @property
  def pending(self) -> jax.Array:
    """int32[B]: the number of forced tokens still queued."""
    return jnp.sum(self.queue >= 0, axis=-1).astype(jnp.int32)


def queue_size(continuation_length: int) -> int:
  """Static queue width for a continuation of `continuation_length` token slots."""
  return max(2, continuation_length - 1)


def init(budgets: jax.Array, tags: TagIds, queue_slots: int = 2) -> BudgetState:
  """The state before the first completion token. budgets: int32[B]; queue_slots: Q (>= 2)."""
  budgets = jnp.asarray(budgets, jnp.int32)
  if queue_slots < 2:
    raise ValueError(f"budgets.init: queue_slots must be >= 2, got {queue_slots}")
  answer_now = budgets == 0
  empty = jnp.full(budgets.shape + (queue_slots,), _EMPTY, jnp.int32)
  return BudgetState(
      in_think=jnp.zeros(budgets.shape, bool),
      think_length=jnp.zeros(budgets.shape, jnp.int32),
      queue=jnp.where(answer_now[:, None], _answer_queue(queue_slots, tags), empty),
      budget_forced=answer_now,
      extensions=jnp.zeros(budgets.shape, jnp.int32),
  )


def _with_queue(state: BudgetState, where: jax.Array, tokens: jax.Array) -> BudgetState:
  """The state with row b's queue set to `tokens` (int32[Q] or [B, Q]) where `where[b]`."""
  tokens = jnp.broadcast_to(tokens, state.queue.shape)
  return state.replace(queue=jnp.where(where[:, None], tokens, state.queue))


def _cap_queue(slots: int, tags: TagIds) -> jax.Array:
  """int32[Q]: `</think> <answer>`, then empty slots."""
  return jnp.array([tags.think_close, tags.answer_open] + [_EMPTY] * (slots - 2), jnp.int32)


def _answer_queue(slots: int, tags: TagIds) -> jax.Array:
  return jnp.array([tags.answer_open] + [_EMPTY] * (slots - 1), jnp.int32)


def forced_tokens(state: BudgetState, tags: TagIds) -> tuple[jax.Array, jax.Array]:
  """Whether the next token is forced, and which. Returns (bool[B], int32[B])."""
  del tags  # The queue holds the ids.
  head = state.queue[:, 0]
  return head >= 0, jnp.maximum(head, 0).astype(jnp.int32)


def select(state: BudgetState, proposals: jax.Array, budgets: jax.Array, tags: TagIds,
           modes: jax.Array | None = None,
           continuation: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The token each row emits: queued, the continuation's first, or the model's proposal.

  Args:
    state: the state before this token.
    proposals: int32[B], what the model sampled.
    budgets: int32[B] (< 0: never intervene).
    tags: the tag ids.
    modes: int32[B] `MODE_CAP` / `MODE_EXTEND`; None: all cap.
    continuation: int32[C] the extend continuation's ids, padded with -1 (C static).

  Returns:
    (tokens int32[B], forced bool[B], suppressed bool[B]): `suppressed` rows proposed an early
    `</think>` that the continuation replaced; pass it to `update`.
  """
  is_forced, forced_token = forced_tokens(state, tags)
  token = jnp.where(is_forced, forced_token, proposals).astype(jnp.int32)
  if modes is None or continuation is None:
    return token, is_forced, jnp.zeros_like(is_forced)
  suppressed = ((modes == MODE_EXTEND) & (budgets >= 0) & state.in_think & ~is_forced
                & (token == tags.think_close) & (state.think_length < budgets))
  token = jnp.where(suppressed, continuation[0], token).astype(jnp.int32)
  return token, is_forced | suppressed, suppressed


def update(state: BudgetState, tokens: jax.Array, budgets: jax.Array, tags: TagIds,
           active: jax.Array | None = None, suppressed: jax.Array | None = None,
           continuation: jax.Array | None = None) -> BudgetState:
  """The state after emitting `tokens` (int32[B], forced or sampled).

  Args:
    state: the state before `tokens`.
    tokens: int32[B], the token each sequence emits now (from `select`).
    budgets: int32[B], think budgets (< 0: never force).
    tags: the tag ids.
    active: bool[B]; rows where it is False keep their state (finished sequences).
    suppressed: bool[B] from `select`: queue the rest of the continuation on these rows.
    continuation: int32[C] the continuation (needed with `suppressed`).
  """
  slots = state.queue.shape[-1]
  opens = tokens == tags.think_open
  closes = tokens == tags.think_close
  think_length = state.think_length + (state.in_think & ~closes).astype(jnp.int32)
  in_think = (state.in_think | opens) & ~closes
  popped = jnp.concatenate([state.queue[:, 1:], jnp.full_like(state.queue[:, :1], _EMPTY)], -1)
  new = state.replace(in_think=in_think, think_length=think_length, queue=popped)
  extended = jnp.zeros_like(in_think)
  if suppressed is not None:
    if continuation is None:
      raise ValueError("budgets.update: `suppressed` needs the `continuation` ids")
    rest = jnp.full((slots,), _EMPTY, jnp.int32)
    tail = continuation[1:slots + 1].astype(jnp.int32)
    rest = rest.at[:tail.shape[0]].set(tail)
    extended = suppressed
    new = _with_queue(new, extended, rest)
  # The cap: at the budget inside <think>, `</think><answer>` (replacing any continuation).
  limit = ((budgets >= 0) & in_think & (think_length >= budgets)
           & (new.queue[:, 0] != tags.think_close))
  new = _with_queue(new, limit, _cap_queue(slots, tags))
  new = new.replace(budget_forced=state.budget_forced | limit | extended,
                    extensions=state.extensions + extended.astype(jnp.int32))
  if active is None:
    return new
  return jax.tree.map(lambda n, o: jnp.where(active if n.ndim == 1 else active[:, None], n, o),
                      new, state)


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
