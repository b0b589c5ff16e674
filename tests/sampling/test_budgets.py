"""The think-budget state machine: hand-worked streams and a plain-Python twin on random streams."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cesar_jax.sampling import budgets as budgets_lib

TAGS = budgets_lib.TagIds(think_open=5, think_close=6, answer_open=7)
O, C, A = 5, 6, 7  # <think>, </think>, <answer>


@functools.partial(jax.jit, static_argnames="tags")
def _run(proposals: jax.Array, budgets: jax.Array, tags=TAGS):
  """Emits proposals[:, t] unless forced. Returns (tokens, forced, final state)."""
  def step(state, proposal):
    is_forced, forced_token = budgets_lib.forced_tokens(state, tags)
    token = jnp.where(is_forced, forced_token, proposal)
    return budgets_lib.update(state, token, budgets, tags), (token, is_forced)
  state, (tokens, forced) = jax.lax.scan(step, budgets_lib.init(budgets, TAGS), proposals.T)
  return tokens.T, forced.T, state


def _reference_machine(proposals, budget):
  """Plain-Python twin of the module docstring's rules."""
  out, forced, queue, inside, length, was_forced = [], [], [], False, 0, False
  if budget == 0:
    queue, was_forced = [A], True
  for p in proposals:
    is_forced = bool(queue)
    tok = queue.pop(0) if queue else p
    out.append(tok)
    forced.append(is_forced)
    if inside and tok != C:
      length += 1
    inside = (inside or tok == O) and tok != C
    if budget >= 0 and inside and length >= budget and not queue:
      queue, was_forced = [C, A], True
  return out, forced, length, was_forced


CASES = [
    # (budget, proposals, expected tokens, expected forced positions, think length)
    (3, [O, 10, 11, 12, 13, 14, 20, 21, 22], [O, 10, 11, 12, C, A, 20, 21, 22], [4, 5], 3),
    (-1, [O, 10, 11, 12, 13, 14, 20, 21, 22], [O, 10, 11, 12, 13, 14, 20, 21, 22], [], 8),
    (0, [O, 10, C, A, 20, 21, 22, 23, 24], [A, 10, C, A, 20, 21, 22, 23, 24], [0], 0),
    (0, [20, O, 10, 11, 12, 13, 14, 15, 16], [A, O, C, A, 12, 13, 14, 15, 16], [0, 2, 3], 0),
    (5, [O, 10, 11, C, A, 20, 21, 22, 23], [O, 10, 11, C, A, 20, 21, 22, 23], [], 2),
    (2, [O, 10, 11, C, A, 20, 21, 22, 23], [O, 10, 11, C, A, 20, 21, 22, 23], [3, 4], 2),
    (4, [O, 10, C, O, 11, 12, 13, 14, 15], [O, 10, C, O, 11, 12, 13, C, A], [7, 8], 4),
    (1, [A, 20, 21, 22, 23, 24, 25, 26, 27], [A, 20, 21, 22, 23, 24, 25, 26, 27], [], 0),
]


def test_hand_worked_streams_in_one_mixed_batch():
  budgets = jnp.array([c[0] for c in CASES], jnp.int32)
  proposals = jnp.array([c[1] for c in CASES], jnp.int32)
  tokens, forced, state = _run(proposals, budgets)
  for i, (budget, _, want, want_forced, want_len) in enumerate(CASES):
    np.testing.assert_array_equal(tokens[i], want, err_msg=f"case {i}")
    np.testing.assert_array_equal(np.flatnonzero(forced[i]), want_forced, err_msg=f"case {i}")
    assert int(state.think_length[i]) == want_len, f"case {i}"
    assert bool(state.budget_forced[i]) == bool(want_forced), f"case {i}"
  np.testing.assert_array_equal(budgets_lib.think_lengths(tokens, TAGS), state.think_length)


def test_random_streams_match_the_python_twin_and_respect_budgets():
  rng = np.random.default_rng(0)
  n, t = 512, 24
  alphabet = np.array([O, C, A, 10, 11, 12])
  proposals = alphabet[rng.choice(6, size=(n, t), p=[0.2, 0.1, 0.05, 0.25, 0.2, 0.2])]
  budgets = rng.integers(-1, 8, size=n).astype(np.int32)
  tokens, forced, state = _run(jnp.asarray(proposals), jnp.asarray(budgets))
  tokens, forced = np.asarray(tokens), np.asarray(forced)
  for i in range(n):
    want, want_forced, want_len, want_was = _reference_machine(list(proposals[i]), budgets[i])
    np.testing.assert_array_equal(tokens[i], want, err_msg=f"row {i}")
    np.testing.assert_array_equal(forced[i], want_forced, err_msg=f"row {i}")
    assert int(state.think_length[i]) == want_len
    assert bool(state.budget_forced[i]) == want_was
  lengths = np.asarray(budgets_lib.think_lengths(jnp.asarray(tokens), TAGS))
  np.testing.assert_array_equal(lengths, state.think_length)
  limited = budgets >= 0
  assert np.all(lengths[limited] <= budgets[limited])
  # Every forced </think> is followed by a forced <answer>.
  close_forced = forced & (tokens == C)
  assert np.all(forced[:, 1:][close_forced[:, :-1]])
  assert np.all(tokens[:, 1:][close_forced[:, :-1]] == A)


def test_inactive_rows_keep_their_state():
  budgets = jnp.array([2, 2])
  state = budgets_lib.init(budgets, TAGS)
  state = budgets_lib.update(state, jnp.array([O, O]), budgets, TAGS)
  state = budgets_lib.update(state, jnp.array([10, 10]), budgets, TAGS,
                             active=jnp.array([True, False]))
  np.testing.assert_array_equal(state.think_length, [1, 0])
  np.testing.assert_array_equal(state.in_think, [True, True])


@pytest.mark.parametrize("budget", [0, 3])
def test_think_lengths_of_forced_outputs_never_exceed_the_budget(budget):
  proposals = jnp.full((1, 12), 10).at[0, 0].set(O)
  tokens, _, _ = _run(proposals, jnp.array([budget]))
  # Budget 0 forces <answer> first, then the <think> the model opens is closed at once.
  assert int(budgets_lib.think_lengths(tokens, TAGS)[0]) == budget


# Extend mode (s1 budget forcing): an early </think> becomes the continuation.
W1, W2 = 40, 41  # the continuation's ids
CONT = jnp.array([W1, W2, -1, -1], jnp.int32)  # padded to a static 4 slots: queue width 3
CAP, EXT = budgets_lib.MODE_CAP, budgets_lib.MODE_EXTEND


@jax.jit
def _run_modes(proposals: jax.Array, budgets: jax.Array, modes: jax.Array, continuation):
  """As `_run`, with per-row modes and the continuation."""
  slots = budgets_lib.queue_size(continuation.shape[0])
  def step(state, proposal):
    token, forced, suppressed = budgets_lib.select(state, proposal, budgets, TAGS, modes,
                                                   continuation)
    state = budgets_lib.update(state, token, budgets, TAGS, suppressed=suppressed,
                               continuation=continuation)
    return state, (token, forced)
  state, (tokens, forced) = jax.lax.scan(step, budgets_lib.init(budgets, TAGS, slots),
                                         proposals.T)
  return tokens.T, forced.T, state


def _reference_extend(proposals, budget, mode, cont):
  """Plain-Python twin of the module docstring's rules, both modes."""
  out, forced, queue, inside, length, was_forced, ext = [], [], [], False, 0, False, 0
  if budget == 0:
    queue, was_forced = [A], True
  for p in proposals:
    is_forced = bool(queue)
    tok = queue.pop(0) if queue else p
    suppressed = (mode == EXT and budget >= 0 and inside and not is_forced and tok == C
                  and length < budget)
    if suppressed:
      tok, is_forced, ext = cont[0], True, ext + 1
      queue, was_forced = list(cont[1:]), True
    out.append(tok)
    forced.append(is_forced)
    if inside and tok != C:
      length += 1
    inside = (inside or tok == O) and tok != C
    if budget >= 0 and inside and length >= budget and not (queue and queue[0] == C):
      queue, was_forced = [C, A], True
  return out, forced, length, was_forced, ext


EXTEND_CASES = [
    # (budget, mode, proposals, expected tokens, expected forced positions, think length)
    # An early </think> becomes "W1 W2", thinking resumes, the cap closes at 5.
    (5, EXT, [O, 10, C, 11, 12, 13, 14, 15, 16], [O, 10, W1, W2, 12, 13, C, A, 16], [2, 3, 6, 7], 5),
    # The budget lands inside the continuation: its rest gives way to </think><answer>.
    (1, EXT, [O, C, 10, 11, 12, 13, 14, 15, 16], [O, W1, C, A, 12, 13, 14, 15, 16], [1, 2, 3], 1),
    # Repeated attempts to close are all suppressed.
    (4, EXT, [O, C, 10, C, 11, 20, 21, 22, 23], [O, W1, W2, W1, W2, C, A, 22, 23], [1, 2, 3, 4, 5, 6], 4),
    # The same stream in cap mode is left alone (it closes before its budget).
    (5, CAP, [O, 10, C, 11, 12, 13, 14, 15, 16], [O, 10, C, 11, 12, 13, 14, 15, 16], [], 1),
    # Budget 0 and no budget behave as in cap mode; no <think> opened: nothing to extend.
    (0, EXT, [20, O, 10, 11, 12, 13, 14, 15, 16], [A, O, C, A, 12, 13, 14, 15, 16], [0, 2, 3], 0),
    (-1, EXT, [O, 10, C, A, 20, 21, 22, 23, 24], [O, 10, C, A, 20, 21, 22, 23, 24], [], 1),
    (6, EXT, [A, 20, C, 22, 23, 24, 25, 26, 27], [A, 20, C, 22, 23, 24, 25, 26, 27], [], 0),
]


def test_extend_hand_worked_streams_in_one_batch_of_mixed_modes():
  budgets = jnp.array([c[0] for c in EXTEND_CASES], jnp.int32)
  modes = jnp.array([c[1] for c in EXTEND_CASES], jnp.int32)
  proposals = jnp.array([c[2] for c in EXTEND_CASES], jnp.int32)
  tokens, forced, state = _run_modes(proposals, budgets, modes, CONT)
  for i, (_, _, _, want, want_forced, want_len) in enumerate(EXTEND_CASES):
    np.testing.assert_array_equal(tokens[i], want, err_msg=f"case {i}")
    np.testing.assert_array_equal(np.flatnonzero(forced[i]), want_forced, err_msg=f"case {i}")
    assert int(state.think_length[i]) == want_len, f"case {i}"
    assert bool(state.budget_forced[i]) == bool(want_forced), f"case {i}"
  np.testing.assert_array_equal(state.extensions, [1, 1, 2, 0, 0, 0, 0])
  np.testing.assert_array_equal(budgets_lib.think_lengths(tokens, TAGS), state.think_length)


def test_extend_random_streams_match_the_python_twin():
  rng = np.random.default_rng(1)
  n, t = 512, 24
  alphabet = np.array([O, C, A, 10, 11, 12])
  proposals = alphabet[rng.choice(6, size=(n, t), p=[0.2, 0.2, 0.05, 0.25, 0.15, 0.15])]
  budgets = rng.integers(-1, 9, size=n).astype(np.int32)
  modes = rng.integers(0, 2, size=n).astype(np.int32)
  tokens, forced, state = _run_modes(jnp.asarray(proposals), jnp.asarray(budgets),
                                     jnp.asarray(modes), CONT)
  tokens, forced = np.asarray(tokens), np.asarray(forced)
  cont = [W1, W2]
  for i in range(n):
    want, want_forced, want_len, want_was, want_ext = _reference_extend(
        list(proposals[i]), budgets[i], modes[i], cont)
    np.testing.assert_array_equal(tokens[i], want, err_msg=f"row {i}")
    np.testing.assert_array_equal(forced[i], want_forced, err_msg=f"row {i}")
    assert int(state.think_length[i]) == want_len, f"row {i}"
    assert bool(state.budget_forced[i]) == want_was, f"row {i}"
    assert int(state.extensions[i]) == want_ext, f"row {i}"
  lengths = np.asarray(state.think_length)
  limited = budgets >= 0
  assert np.all(lengths[limited] <= budgets[limited])
  # No extend row with a budget closes a span by sampling (every such close is suppressed)
  # and every forced close sits exactly at the budget.
  last_open = np.maximum.accumulate(np.where(tokens == O, np.arange(t), -1), axis=1)
  last_close = np.maximum.accumulate(np.where(tokens == C, np.arange(t), -1), axis=1)
  inside_before = np.pad((last_open > last_close)[:, :-1], ((0, 0), (1, 0)))
  sampled_close = (tokens == C) & inside_before & ~forced
  ext = limited & (modes == EXT)
  assert not sampled_close[ext].any() and sampled_close[~limited | (modes == CAP)].any()
  closed = np.any((tokens == C) & forced, axis=1) & ext
  np.testing.assert_array_equal(lengths[closed], budgets[closed])
  assert np.asarray(state.extensions)[modes == EXT].sum() > 50
  assert np.asarray(state.extensions)[modes == CAP].sum() == 0
