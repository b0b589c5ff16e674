"""The sampler's two jitted bodies as pure functions: prefill, and the while-loop decode.

    prefill(graphdef, params, batch, num_samples, max_new_tokens) -> (logits f32[B*G, V], cache)
    decode(graphdef, params, logits, cache, controls, ...) -> (Samples, cache)

Prefill encodes each prompt's audio once and runs the B left-padded prompts into a cache of
their P slots; that cache becomes the shared prefix of B * G rows of `max_new_tokens` own slots
(`decoder.share_prefix`): the G samples of a GRPO group share one prefill and one prompt cache,
which every decode step reads once per group. The last-position logits are repeated G times.
Decode selects the first token from those logits, then loops `model.decode_step` + selection
in a `lax.while_loop` that stops when every row has finished or `controls.max_new_tokens`
tokens were emitted. Every control (budgets, budget modes, the extend continuation,
temperature, top-p, top-k, stop ids, max new tokens, the key) is a traced array.

The step-t token of row n uses the key `fold_in(key, t)`; each row draws from it by its index
in the batch, and threefry is partitionable, so the result does not depend on the mesh.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from cesar_jax.models import decoder as decoder_lib
from cesar_jax.sampling import budgets as budgets_lib
from cesar_jax.sampling import decoding
from cesar_jax.sampling import samples as samples_lib
from cesar_jax.sampling.batching import PromptBatch


@flax.struct.dataclass
class Controls:
  """Traced per-call controls of the decode loop (N = B * G rows).

  Attributes:
    budgets: int32[N] think budgets; < 0 never forces (see budgets.py).
    modes: int32[N] budget modes, `budgets.MODE_CAP` or `budgets.MODE_EXTEND`, per row.
    continuation: int32[C] the extend mode's continuation ids (s1: "Wait"), padded with -1;
      C is static (`SamplerConfig.max_continuation_ids`).
    sampling: per-row temperature / top-p / top-k.
    stop_ids: int32[S] stop token ids, padded with -1 (S is static: the number of slots).
    max_new_tokens: int32[] tokens to emit at most (<= the cache's static capacity).
    key: uint32 key data of a jax.random key (`jax.random.key_data`; plain data so it can be
      placed on a mesh like any array).
  """
  budgets: jax.Array
  modes: jax.Array
  continuation: jax.Array
  sampling: decoding.SamplingParams
  stop_ids: jax.Array
  max_new_tokens: jax.Array
  key: jax.Array


@flax.struct.dataclass
class LoopState:
  """The while-loop carry. `step` = tokens emitted so far = the next column to write."""
  step: jax.Array                      # int32[]
  last: jax.Array                      # int32[N] last emitted token (the next model input)
  done: jax.Array                      # bool[N]
  lengths: jax.Array                   # int32[N]
  finish: jax.Array                    # int32[N]
  tokens: jax.Array                    # int32[N, M]
  logprobs: jax.Array                  # f32[N, M]
  forced: jax.Array                    # bool[N, M]
  budget: budgets_lib.BudgetState
  cache: decoder_lib.KVCache


def prefill(graphdef: nnx.GraphDef, params: nnx.State, batch: PromptBatch, *, num_samples: int,
            max_new_tokens: int, cache_dtype=None,
            prompts_per_pass: int = 0) -> tuple[jax.Array, decoder_lib.KVCache]:
  """Prompts -> (last-position logits f32[B*G, V], cache: the B prompts as a shared prefix of
  B*G rows with max_new_tokens own slots each).

  `prompts_per_pass` (0 = all B at once) runs the prompts' audio encoder and decoder forward
  `prompts_per_pass` prompts at a time (`lax.map`), so the prefill's activations are those of
  one pass, not of the whole batch. A pass takes every (B / prompts_per_pass)-th prompt, so
  under batch sharding each pass keeps its rows on every device.
  """
  model = nnx.merge(graphdef, params)
  b, p = batch.input_ids.shape

  def run(chunk: PromptBatch):
    cache = model.init_cache(chunk.input_ids.shape[0], p, dtype=cache_dtype)
    return model.prefill(chunk.input_ids, chunk.attention_mask, cache, chunk.input_features,
                         chunk.feature_attention_mask)

  if not prompts_per_pass or prompts_per_pass >= b:
    logits, cache = run(batch)
  else:
    if b % prompts_per_pass:
      raise ValueError(f"sampler prefill: {prompts_per_pass} prompts per pass "
                       f"(config.sampling.prefill_batch) do not divide the batch of {b} prompts")
    passes = b // prompts_per_pass
    # Row r goes to pass r % passes: [B, ...] -> [passes, B / passes, ...] and back.
    split = lambda x: jnp.swapaxes(x.reshape((prompts_per_pass, passes) + x.shape[1:]), 0, 1)
    join = lambda x: jnp.swapaxes(x, 0, 1).reshape((b,) + x.shape[2:])
    logits, cache = jax.lax.map(run, jax.tree.map(split, batch))
    logits = join(logits)
    join_layers = lambda x: jnp.moveaxis(x, 0, 2).reshape((x.shape[1], b) + x.shape[3:])
    cache = cache.replace(k=join_layers(cache.k), v=join_layers(cache.v),
                          mask=join(cache.mask), next_position=join(cache.next_position),
                          index=cache.index[0])
  cache = decoder_lib.share_prefix(cache, num_samples, max_new_tokens)
  return jnp.repeat(logits, num_samples, axis=0), cache


def _emit(state: LoopState, logits: jax.Array, controls: Controls, tags: budgets_lib.TagIds,
          pad_id: int) -> LoopState:
  """Selects (samples or forces) and records one token per unfinished row."""
  key = jax.random.fold_in(jax.random.wrap_key_data(controls.key), state.step)
  proposal = decoding.sample_tokens(key, logits, controls.sampling)
  token, is_forced, suppressed = budgets_lib.select(
      state.budget, proposal, controls.budgets, tags, controls.modes, controls.continuation)
  logp = decoding.token_log_probs(logits, token, controls.sampling.temperature)
  active = ~state.done
  stopped = active & jnp.any(token[:, None] == controls.stop_ids[None, :], axis=-1)

  def put(buffer, column):
    return jax.lax.dynamic_update_slice(buffer, column[:, None].astype(buffer.dtype),
                                        (0, state.step))

  emitted = jnp.where(active, token, pad_id)
  return state.replace(
      step=state.step + 1,
      last=emitted,
      done=state.done | stopped,
      lengths=state.lengths + active.astype(jnp.int32),
      finish=jnp.where(stopped, samples_lib.FINISH_STOP, state.finish),
      tokens=put(state.tokens, emitted),
      logprobs=put(state.logprobs, jnp.where(active, logp, 0.0)),
      forced=put(state.forced, active & is_forced),
      budget=budgets_lib.update(state.budget, token, controls.budgets, tags, active,
                                suppressed=suppressed, continuation=controls.continuation),
  )


def decode(graphdef: nnx.GraphDef, params: nnx.State, logits: jax.Array,
           cache: decoder_lib.KVCache, controls: Controls, *, tags: budgets_lib.TagIds,
           pad_id: int, capacity: int,
           num_samples: int) -> tuple[samples_lib.Samples, decoder_lib.KVCache]:
  """The decode loop. logits: f32[N, V] from prefill; capacity: static max new tokens (M);
  num_samples: G (rows b*G .. b*G+G-1 share prompt b)."""
  model = nnx.merge(graphdef, params)
  n = logits.shape[0]
  max_new = jnp.clip(controls.max_new_tokens, 1, capacity)
  state = LoopState(
      step=jnp.zeros((), jnp.int32),
      last=jnp.full((n,), pad_id, jnp.int32),
      done=jnp.zeros((n,), bool),
      lengths=jnp.zeros((n,), jnp.int32),
      finish=jnp.full((n,), samples_lib.FINISH_RUNNING, jnp.int32),
      tokens=jnp.full((n, capacity), pad_id, jnp.int32),
      logprobs=jnp.zeros((n, capacity), jnp.float32),
      forced=jnp.zeros((n, capacity), bool),
      budget=budgets_lib.init(controls.budgets, tags,
                              budgets_lib.queue_size(controls.continuation.shape[0])),
      cache=cache,
  )
  state = _emit(state, logits, controls, tags, pad_id)

  def cond(state: LoopState) -> jax.Array:
    return (state.step < max_new) & ~jnp.all(state.done)

  def body(state: LoopState) -> LoopState:
    step_logits, cache = model.decode_step(state.last, state.cache, valid=~state.done)
    return _emit(state.replace(cache=cache), step_logits, controls, tags, pad_id)

  state = jax.lax.while_loop(cond, body, state)
  lengths_mask = jnp.arange(capacity)[None, :] < state.lengths[:, None]
  out = samples_lib.Samples(
      tokens=state.tokens,
      logprobs=state.logprobs,
      forced=state.forced,
      loss_mask=lengths_mask & ~state.forced,
      lengths=state.lengths,
      think_lengths=state.budget.think_length,
      budget_forced=state.budget.budget_forced,
      finish_reason=jnp.where(state.finish == samples_lib.FINISH_RUNNING,
                              samples_lib.FINISH_LENGTH, state.finish),
      budgets=controls.budgets,
      prompt_index=jnp.arange(n, dtype=jnp.int32) // num_samples,
  )
  return out, state.cache
