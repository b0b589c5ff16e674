"""The GRPO job: prompts -> G samples each -> rewards -> advantages -> mu updates, resumable.

    python -m cesar_jax.main --config=configs/smoke.py --workdir=/tmp/grpo_smoke

Per step (all arrays sharded over one mesh; Python only orchestrates):

1. data: the next batch of B prompts (grain; its iterator state is checkpointed);
2. sampling: `Sampler.generate` with the current parameters, G completions per prompt, the
   step's key `fold_in(fold_in(key(seed), step), 0)`;
3. rewards: the jitted token-id reward (`cesar_jax.rewards.build`) and the group advantages;
4. update: `train_step.GrpoUpdate` (mu optimizer updates, gradient accumulation over
   minibatches, donated state).

Logged every step (metrics.jsonl, TensorBoard, console): each reward component
(`reward/<name>`), `accuracy`, `format_rate`, `think_length`, `completion_length`,
`truncated_frac`, `kl` (beta > 0), `clip_frac/*`, `entropy`, `grad_norm`, `logp_gap/{mean,max}`
(sampler vs training log-probs of the scored tokens), `optim/lr`,
`optim/skipped_steps`, and the time split `time/{data,sampling,rewards,update}`.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from cesar_jax import config as config_lib
from cesar_jax import rewards as rewards_lib
from cesar_jax.parallel import distributed
from cesar_jax.rl import grpo
from cesar_jax.rl import optim
from cesar_jax.rl import train_lib
from cesar_jax.rl import train_step
from cesar_jax.sampling import batching
from cesar_jax.sampling import samples as samples_lib
from cesar_jax.sampling import sampler as sampler_lib

CONSOLE_KEYS = ("reward/total", "accuracy", "format_rate", "think_length", "loss", "kl",
                "entropy", "grad_norm", "logp_gap/mean", "optim/lr", "time/sampling",
                "time/update")
# Always computed for the metrics; weight 0 when the config does not reward them.
LOGGED_COMPONENTS = ("accuracy", "format")


def sampler_config(config: ml_collections.ConfigDict, tokenizer) -> sampler_lib.SamplerConfig:
  s = config.sampling
  return sampler_lib.SamplerConfig.from_tokenizer(
      tokenizer, max_new_tokens=int(s.max_new_tokens),
      prompt_buckets=tuple(int(b) for b in config.data.buckets), budget_mode=s.budget_mode,
      temperature=float(s.temperature), top_p=float(s.top_p), top_k=int(s.top_k),
      prefill_batch=int(s.get("prefill_batch", 0)))


def step_config(config: ml_collections.ConfigDict,
                compute_dtype: str | None = None) -> train_step.StepConfig:
  """The update's static settings; `compute_dtype` defaults to `config.model.dtype`."""
  g = config.grpo
  loss = grpo.LossConfig(
      aggregation=g.loss_aggregation, beta=float(g.beta), epsilon_low=float(g.epsilon_low),
      epsilon_high=float(g.epsilon_high),
      max_completion_length=int(config.sampling.max_new_tokens))
  return train_step.StepConfig(
      loss=loss, num_samples=int(config.sampling.num_samples),
      grad_accum_steps=int(g.grad_accum_steps), mu=int(g.mu),
      temperature=float(config.sampling.temperature), compute_entropy=bool(g.log_entropy),
      old_logp=str(g.old_logp),
      compute_dtype=compute_dtype or str(config.model.get("dtype", "float32")))


def reward_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config.rewards` plus zero-weight accuracy and format terms (logged, never rewarded)."""
  cfg = ml_collections.ConfigDict(config.rewards.to_dict())
  for name in LOGGED_COMPONENTS:
    if name not in cfg.weights:
      cfg.weights[name] = 0.0
  return cfg


def _think_budget(config: ml_collections.ConfigDict) -> int | None:
  budget = int(config.sampling.think_budget)
  return None if budget < 0 else budget


def reward_lengths(samples: samples_lib.Samples) -> jax.Array:
  """int32[N]: what the reward scores, the tokens before `<|im_end|>` (rewards.api.RewardFn)."""
  stopped = samples.finish_reason == samples_lib.FINISH_STOP
  return samples.lengths - stopped.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("estimator", "num_samples"))
def score(reward_fn: rewards_lib.RewardFn, samples: samples_lib.Samples,
          example_arrays: Mapping[str, jax.Array], host_values: jax.Array | None = None, *,
          estimator: str, num_samples: int) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Rewards and advantages of the rollouts [N = B * G], and their summary metrics.

  host_values: f32[N, C], the Python reward components (`rewards.host.rollout_values`), or
  None when the config has none."""
  stopped = samples.finish_reason == samples_lib.FINISH_STOP
  lengths = reward_lengths(samples)
  arrays = dict(example_arrays, sample_to_example=samples.prompt_index)
  out = reward_fn(samples.tokens, lengths, arrays, host_values)
  advantages = grpo.get_advantage_estimator(estimator)(out["total"], num_samples)
  grouped = out["total"].reshape(-1, num_samples)
  metrics = {f"reward/{k}": jnp.mean(v) for k, v in out.items()}
  metrics.update({
      "reward/total_std": jnp.std(out["total"]),
      "reward/constant_group_frac": jnp.mean(
          (jnp.max(grouped, axis=1) == jnp.min(grouped, axis=1)).astype(jnp.float32)),
      "accuracy": jnp.mean(out["accuracy"]),
      "format_rate": jnp.mean(out["format"]),
      "think_length": jnp.mean(samples.think_lengths.astype(jnp.float32)),
      "completion_length": jnp.mean(samples.lengths.astype(jnp.float32)),
      "truncated_frac": jnp.mean((~stopped).astype(jnp.float32)),
      "budget_forced_frac": jnp.mean(samples.budget_forced.astype(jnp.float32)),
      "advantage/abs_mean": jnp.mean(jnp.abs(advantages)),
  })
  return advantages, metrics


def completion_buckets(capacity: int, count: int) -> tuple[int, ...]:
  """`count` completion widths the update compiles for: capacity * i / count, i = 1..count
  (rounded up to a multiple of 8), so a batch whose longest completion is short does not
  train on padding, and at most `count` update programs are ever compiled."""
  if count < 1:
    raise ValueError(f"config.grpo.completion_buckets={count} must be >= 1")
  widths = set()
  for i in range(1, count + 1):
    width = -(-capacity * i // count)  # ceil
    widths.add(min(capacity, -(-width // 8) * 8))
  return tuple(sorted(widths))


def completion_width(samples: samples_lib.Samples, buckets: Sequence[int]) -> int:
  """The smallest bucket that holds the longest completion of the (global) batch. Cutting
  the columns past it changes nothing: they are padding in every row (masked out)."""
  if len(buckets) == 1:
    return buckets[0]
  longest = int(jax.device_get(jnp.max(samples.lengths)))
  return next(b for b in buckets if b >= longest)


# Batch entries that are model inputs, not fields of the record.
_MODEL_INPUTS = ("prompt_ids", "prompt_mask", "input_features", "feature_mask",
                 "num_audio_tokens", "example_mask")


def _examples(batch: Mapping[str, Any], think_budget: int | None) -> list[dict[str, Any]]:
  """The reward's view of each prompt (host side, once per prompt): every field of its record
  (those inside `extra` too, e.g. the synthetic set's `events`), `choices` as a list."""
  out = []
  for i in range(len(batch["id"])):
    extra = batch["extra"][i] if "extra" in batch else None
    ex = dict(extra) if isinstance(extra, Mapping) else {}
    ex.update({k: v[i] for k, v in batch.items() if k not in _MODEL_INPUTS})
    ex["choices"] = list(batch["choices"][i])
    if think_budget is not None:
      ex["think_budget"] = think_budget
    out.append(ex)
  return out


class GrpoTrainer:
  """Everything a GRPO run holds: mesh, tokenizer, policy, sampler, reward, update, data."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    self.mesh, self.tokenizer, self.graphdef, params, model_config = train_lib.start_policy(
        config, workdir)
    self.step_config = step_config(config, model_config.dtype)
    train_lib.check_batch_layout(
        self.mesh, prompts=int(config.data.batch_size), samples=self.step_config.num_samples,
        grad_accum_steps=self.step_config.grad_accum_steps, prefix=("data", "sampling", "grpo"))
    self.compute_dtype = model_config.dtype
    # The reference policy is the initial one: a copy of its trainable part in the compute
    # dtype (the train state is donated), merged with the policy's frozen part in the update.
    # With LoRA that is the fresh adapters (B = 0: the base model), not a second base.
    self.ref_params = None
    if self.step_config.loss.beta > 0:
      self.ref_params = jax.tree.map(
          lambda x: jnp.array(x, dtype=self.compute_dtype if jnp.issubdtype(
              x.dtype, jnp.floating) else x.dtype, copy=True),
          train_lib.split_trainable(params)[0])
    self.tx = optim.make_optimizer(config.optim)
    self.state, shardings = train_lib.init_train_state(params, self.tx, self.mesh)
    self._param_shardings = shardings["params"]
    self.update = train_step.GrpoUpdate(self.graphdef, self.tx, self.step_config, self.mesh,
                                        shardings)
    self.sampler = sampler_lib.Sampler(self.graphdef, sampler_config(config, self.tokenizer),
                                       self.mesh)
    self.reward_config = reward_config(config)
    self.reward_fn = rewards_lib.build(self.reward_config, self.tokenizer)
    self.think_budget = _think_budget(config)
    prompted = config.sampling.budget_mode == "prompted"
    self.iterator = train_lib.make_iterator(
        config.data, self.tokenizer, batch_size=int(config.data.batch_size),
        think_budget=self.think_budget if prompted else None)
    self.nan_steps = frozenset(int(s) for s in config.debug.nan_steps)
    self.completion_buckets = completion_buckets(int(config.sampling.max_new_tokens),
                                                 int(config.grpo.completion_buckets))

  def _prompts(self, batch: Mapping[str, Any]) -> batching.PromptBatch:
    return batching.make_batch(
        {"input_ids": batch["prompt_ids"], "attention_mask": batch["prompt_mask"],
         "input_features": batch["input_features"],
         "feature_attention_mask": batch["feature_mask"]},
        buckets=self.sampler.config.prompt_buckets, pad_id=self.tokenizer.pad_id)

  def step(self, state: train_lib.TrainState, step: int, key: jax.Array):
    """One GRPO step; returns (state, metrics, texts)."""
    cfg, timer = self.config, train_lib.Timer()
    g = self.step_config.num_samples
    with timer("data"):
      batch = next(self.iterator)
      prompts = self._prompts(batch)
      examples = _examples(batch, self.think_budget)
    with timer("sampling"):
      forced = cfg.sampling.budget_mode in ("forced", "extend") and self.think_budget is not None
      # The masters cast once to the compute dtype: the decode loop reads that copy.
      policy = train_lib.cast_params(state["params"], self.compute_dtype, self._param_shardings)
      samples = self.sampler.generate(
          policy, prompts, num_samples=g, key=jax.random.fold_in(key, 0),
          budgets=self.think_budget if forced else None)
      del policy
      jax.block_until_ready(samples)
    with timer("rewards"):
      arrays = train_lib.to_global(
          rewards_lib.encode_examples(examples, self.tokenizer, self.reward_config), self.mesh)
      host_values = None  # The Python reward components, on the rows this process holds.
      if self.reward_fn.host_names:
        host_values = train_lib.to_global({"v": rewards_lib.host.rollout_values(
            self.reward_config, samples.tokens, reward_lengths(samples), samples.prompt_index,
            examples, self.tokenizer)}, self.mesh)["v"]
      advantages, metrics = score(self.reward_fn, samples, arrays, host_values,
                                  estimator=cfg.grpo.advantage, num_samples=g)
      jax.block_until_ready(advantages)
    with timer("update"):
      device_prompts = train_lib.to_global(
          {"prompt_ids": prompts.input_ids, "prompt_mask": prompts.attention_mask,
           "input_features": prompts.input_features,
           "feature_mask": prompts.feature_attention_mask}, self.mesh)
      width = completion_width(samples, self.completion_buckets)
      rollouts = train_step.Rollouts(
          **device_prompts, completions=samples.tokens[:, :width],
          completion_mask=samples.valid[:, :width], loss_mask=samples.loss_mask[:, :width],
          old_logp=samples.logprobs[:, :width], advantages=advantages,
          loss_scale=np.float32(np.nan if step in self.nan_steps else 1.0))
      state, update_metrics = self.update(state, rollouts, self.ref_params)
      jax.block_until_ready(update_metrics)
    metrics.update(update_metrics)
    metrics.update(timer.metrics())
    texts = None
    if cfg.log_every and step % int(cfg.log_every) == 0 and jax.process_index() == 0:
      texts = {"samples": self._sample_text(batch, samples)}
    return state, metrics, texts

  def _sample_text(self, batch, samples: samples_lib.Samples) -> str:
    """The first prompt's question and its G completions (for TensorBoard's text tab); process
    0's rows come first in the global batch, so its first prompt is the global first."""
    g = self.step_config.num_samples
    host = (distributed.host_rows(samples.tokens)[:g], distributed.host_rows(samples.lengths)[:g])
    lines = [f"**{batch['question'][0]}** (answer: {batch['answer'][0]})"]
    lines += [f"- `{self.tokenizer.decode(t[:n])}`" for t, n in zip(*host)]
    return "\n".join(lines)

  def run(self) -> train_lib.TrainState:
    with jax.set_mesh(self.mesh):  # the models' activation sharding constraints apply
      state = train_lib.train_loop(
          workdir=self.workdir, state=self.state, iterator=self.iterator, step_fn=self.step,
          total_steps=int(self.config.steps), config=self.config, console_keys=CONSOLE_KEYS)
    logging.info("GRPO done: %d steps, update compiled %d time(s), sampler %d executable(s)",
                 int(self.config.steps), self.update.compile_count, self.sampler.compile_count)
    return state


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """The `grpo` job (cesar_jax.main)."""
  if jax.process_index() == 0:  # as cesar_jax.main does; for callers that skip it
    config_lib.save(config, workdir)
  GrpoTrainer(config, workdir).run()
