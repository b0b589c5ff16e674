"""The `sft` job: supervised cold start on reasoning traces (loss on the completion only).

    python -m cesar_jax.main --config=configs/synthetic_tiny.py:job=sft --workdir=/tmp/sft

Each example is the prompt (audio placeholders expanded, left-padded to its bucket) followed by
its target, the item's `trace` ("<think>...</think><answer>...</answer>") encoded and closed by
`<|im_end|>`, right-padded to `config.sft.max_target_tokens` (longer targets are cut and
counted in `truncated_frac`). Teacher forcing; the cross-entropy is the mean over the target
tokens of the batch, prompt positions are never scored. Same optimizer (config.optim with
`config.sft.lr`, `steps`, `warmup_steps`), checkpoints, metrics and resume as the GRPO job;
the result is the `init_from` of a GRPO run.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from cesar_jax import config as config_lib
from cesar_jax.rl import grpo
from cesar_jax.rl import optim
from cesar_jax.rl import train_lib
from cesar_jax.rl import train_step

CONSOLE_KEYS = ("loss", "token_accuracy", "target_length", "grad_norm", "optim/lr",
                "time/update")


def optim_section(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config.optim` with the SFT learning rate, schedule length and warmup."""
  section = ml_collections.ConfigDict(config.optim.to_dict())
  section.lr = float(config.sft.lr)
  section.total_steps = int(config.sft.steps)
  section.warmup_steps = int(config.sft.warmup_steps)
  return section


def encode_targets(traces: list[str], tokenizer, max_tokens: int) -> tuple[np.ndarray, np.ndarray,
                                                                           np.ndarray]:
  """Traces -> (targets int32[B, max_tokens] right-padded with pad_id, mask int32[B, max_tokens],
  truncated bool[B]); each target is the trace's tokens then `<|im_end|>`."""
  ids = [tokenizer.encode(t) + [tokenizer.eos_id] for t in traces]
  targets = np.full((len(ids), max_tokens), tokenizer.pad_id, np.int32)
  mask = np.zeros((len(ids), max_tokens), np.int32)
  for i, row in enumerate(ids):  # host side, once per example
    n = min(len(row), max_tokens)
    targets[i, :n] = row[:n]
    mask[i, :n] = 1
  return targets, mask, np.array([len(r) > max_tokens for r in ids])


def _traces(batch: Mapping[str, Any]) -> list[str]:
  out = []
  for i in range(len(batch["id"])):
    trace = train_lib.example_field(batch, "trace", i)
    if not trace:
      raise ValueError(f"SFT needs a reasoning trace: record {batch['id'][i]!r} has none "
                       "(use a dataset with traces, e.g. config.data.name='synthetic')")
    out.append(str(trace))
  return out


class SftUpdate:
  """The compiled SFT step: cross-entropy on target tokens, gradient accumulation, donation."""

  def __init__(self, graphdef: nnx.GraphDef, tx, grad_accum_steps: int, mesh: Mesh,
               state_shardings: Any, compute_dtype: str = "float32",
               logits_chunk: int = grpo.DEFAULT_LOGITS_CHUNK):
    self.graphdef, self.tx, self.k, self.mesh = graphdef, tx, grad_accum_steps, mesh
    self.compute_dtype = compute_dtype
    self.logits_chunk = logits_chunk  # target positions per log-prob chunk; 0 = full logits
    self._state_shardings = state_shardings
    self._fn = None

  @property
  def compile_count(self) -> int:
    return 0 if self._fn is None else self._fn._cache_size()  # pylint: disable=protected-access

  def __call__(self, state: train_lib.TrainState, batch: Mapping[str, jax.Array]):
    return self._jitted(batch)(state, dict(batch))

  def lower(self, state: train_lib.TrainState,
            batch: Mapping[str, jax.Array]) -> jax.stages.Lowered:
    """The step lowered for these (abstract) arguments, not run (cesar_jax.compile_check)."""
    return self._jitted(batch).lower(state, dict(batch))

  def _jitted(self, batch: Mapping[str, jax.Array]):
    if self._fn is None:
      self._fn = jax.jit(self._step, in_shardings=(
          self._state_shardings, train_lib.batch_shardings(dict(batch), self.mesh)),
                         out_shardings=(self._state_shardings, train_lib.replicated(self.mesh)),
                         donate_argnums=(0,))
    return self._fn

  def _loss(self, trainable, frozen, mb, num_tokens):
    model = nnx.merge(self.graphdef, trainable, frozen)
    hidden = train_step.completion_hidden(
        model, mb["prompt_ids"], mb["prompt_mask"], mb["input_features"], mb["feature_mask"],
        mb["targets"], mb["target_mask"], num_samples=1)
    stats = grpo.chunked_logp_entropy(hidden, model.language_model.logits, mb["targets"],
                                      chunk=self.logits_chunk, argmax_match=True)
    mask = mb["target_mask"].astype(jnp.float32)
    nll = -jnp.sum(jnp.where(mask > 0, stats["logp"], 0.0)) / num_tokens
    correct = jnp.sum(jnp.where(mask > 0, stats["argmax_match"], False))
    return nll, {"token_accuracy": correct / num_tokens}

  def _step(self, state, batch):
    trainable, frozen = train_lib.split_trainable(state["params"])
    # Masters -> compute dtype once per step; gradients accumulate in float32 (train_step.py).
    compute = train_step.cast_floating(trainable, self.compute_dtype)
    compute_frozen = train_step.cast_floating(frozen, self.compute_dtype)
    # Token mean over the whole batch: each minibatch divides by the batch's token count.
    num_tokens = jnp.maximum(jnp.sum(batch["target_mask"].astype(jnp.float32)), 1.0)
    mbs = train_lib.minibatches(batch, self.k)
    grad_fn = jax.value_and_grad(self._loss, has_aux=True)

    def accumulate(acc, mb):
      grads_sum, loss_sum = acc
      (loss, metrics), grads = grad_fn(compute, compute_frozen, mb, num_tokens)
      grads_sum = jax.tree.map(lambda a, b: a + b.astype(a.dtype), grads_sum, grads)
      return (grads_sum, loss_sum + loss), metrics

    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), trainable)
    (grads, loss), metrics = jax.lax.scan(accumulate, (zeros, jnp.zeros((), jnp.float32)), mbs)
    metrics = {k: jnp.sum(v) for k, v in metrics.items()}  # parts of one batch-wide mean
    metrics.update(loss=loss, grad_norm=optax.global_norm(grads))
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, trainable)
    trainable, opt_state = train_lib.apply_gradients(self.tx, trainable, state["opt_state"],
                                                     grads, loss)
    metrics.update(optim.optimizer_metrics(opt_state))
    return {"params": train_lib.merge_trainable(trainable, frozen), "opt_state": opt_state}, metrics


class SftTrainer:
  """Mesh, tokenizer, policy, data and the compiled step of a SFT run."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    self.mesh, self.tokenizer, self.graphdef, params, model_config = train_lib.start_policy(
        config, workdir)
    train_lib.check_batch_layout(self.mesh, prompts=int(config.sft.batch_size), samples=1,
                                 grad_accum_steps=int(config.sft.grad_accum_steps),
                                 prefix=("sft", None, "sft"))
    self.optim = optim_section(config)
    self.tx = optim.make_optimizer(self.optim)
    self.state, shardings = train_lib.init_train_state(params, self.tx, self.mesh)
    self.update = SftUpdate(self.graphdef, self.tx, int(config.sft.grad_accum_steps), self.mesh,
                            shardings, compute_dtype=model_config.dtype)
    self.iterator = train_lib.make_iterator(config.data, self.tokenizer,
                                            batch_size=int(config.sft.batch_size))

  def step(self, state: train_lib.TrainState, step: int, key: jax.Array):
    del step, key  # SFT draws nothing at random (the data order is the iterator's).
    timer = train_lib.Timer()
    with timer("data"):
      batch = next(self.iterator)
      targets, target_mask, truncated = encode_targets(
          _traces(batch), self.tokenizer, int(self.config.sft.max_target_tokens))
      arrays = train_lib.to_global({
          "prompt_ids": batch["prompt_ids"], "prompt_mask": batch["prompt_mask"],
          "input_features": batch["input_features"], "feature_mask": batch["feature_mask"],
          "targets": targets, "target_mask": target_mask}, self.mesh)
    with timer("update"):
      state, metrics = self.update(state, arrays)
      jax.block_until_ready(metrics)
    metrics = dict(metrics)
    metrics["target_length"] = float(target_mask.sum(axis=1).mean())
    metrics["truncated_frac"] = float(truncated.mean())
    metrics.update(timer.metrics())
    return state, metrics, None

  def run(self) -> train_lib.TrainState:
    config = ml_collections.ConfigDict(self.config.to_dict())
    config.optim = self.optim  # the loop's non-finite-step limit and the checkpoint metadata
    with jax.set_mesh(self.mesh):  # the models' activation sharding constraints apply
      return train_lib.train_loop(
          workdir=self.workdir, state=self.state, iterator=self.iterator, step_fn=self.step,
          total_steps=int(self.config.sft.steps), config=config, console_keys=CONSOLE_KEYS)


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """The `sft` job (cesar_jax.main)."""
  if jax.process_index() == 0:  # as cesar_jax.main does; for callers that skip it
    config_lib.save(config, workdir)
  SftTrainer(config, workdir).run()
