"""The GRPO update: one jitted function of (train state, rollouts) with donated state.

    update = GrpoUpdate(graphdef, tx, StepConfig(...), mesh, state_shardings)
    state, metrics = update(state, rollouts, ref_params)    # ref_params None when beta == 0

Inside, for each of `mu` passes (one optimizer update each), the B prompts are split into
`grad_accum_steps` minibatches of whole groups (B / k prompts and their G rollouts); a
`lax.scan` over them accumulates the gradient of the clipped GRPO loss (cesar_jax.rl.grpo), and
optax applies it (AdamW, schedule, clipping; skipped when the loss or a gradient is not finite).
Per minibatch the audio of each prompt is encoded ONCE and its embeddings repeated for the G
rollouts; logits are divided by the sampling temperature before the log-softmax. With mu > 1 the
sampler's per-token log-probs are the old log-probs; with mu == 1 the ratio is 1 (on-policy).
Reference log-probs are computed (without gradient) only when beta > 0.

Shapes: B prompts, G samples each, N = B * G rollouts, P prompt bucket, M completion capacity
(`sampling.max_new_tokens`), F feature frames. Changing a value never recompiles; changing a
shape (another prompt bucket) compiles once more.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from cesar_jax.models.audio_lm import AudioLM, splice_audio
from cesar_jax.rl import grpo
from cesar_jax.rl import optim
from cesar_jax.rl import train_lib


@flax.struct.dataclass
class Rollouts:
  """What one GRPO update consumes (device arrays, batch dim sharded).

  Attributes:
    prompt_ids: int32[B, P] left-padded prompts (audio placeholders expanded).
    prompt_mask: int32[B, P].
    input_features: f32[B, n_mels, F]; feature_mask: int32[B, F].
    completions: int32[N, M] sampled tokens (stop token included, padding after).
    completion_mask: bool[N, M] emitted tokens (attended to).
    loss_mask: bool[N, M] tokens the loss scores (emitted, sampled: not forced).
    old_logp: f32[N, M] the sampler's log-probs (used when mu > 1).
    advantages: f32[N].
    loss_scale: f32[] multiplies the advantages: 1, or NaN to exercise the non-finite skip.
  """
  prompt_ids: Any
  prompt_mask: Any
  input_features: Any
  feature_mask: Any
  completions: Any
  completion_mask: Any
  loss_mask: Any
  old_logp: Any
  advantages: Any
  loss_scale: Any


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static settings of the update (hashable; changing one recompiles)."""
  loss: grpo.LossConfig
  num_samples: int  # G
  grad_accum_steps: int = 1  # minibatches per optimizer update
  mu: int = 1  # optimizer updates per sampled batch
  temperature: float = 1.0
  compute_entropy: bool = True
  # Completion positions per chunk of log-probs from hidden states (grpo.chunked_logp_entropy):
  # never a full f32[N, M, V] logits array; 0 = the full logits at once.
  logits_chunk: int = grpo.DEFAULT_LOGITS_CHUNK

  def __post_init__(self):
    if self.logits_chunk < 0:
      raise ValueError(f"StepConfig: logits_chunk must be >= 0 (0 = unchunked): {self}")
    if self.num_samples < 1 or self.grad_accum_steps < 1 or self.mu < 1:
      raise ValueError(f"StepConfig: num_samples, grad_accum_steps and mu must be >= 1: {self}")
    if self.temperature <= 0:
      raise ValueError(f"StepConfig: temperature must be > 0 to score samples: {self}")


def completion_logits(model: AudioLM, prompt_ids: jax.Array, prompt_mask: jax.Array,
                      input_features: jax.Array, feature_mask: jax.Array,
                      completions: jax.Array, completion_mask: jax.Array,
                      num_samples: int) -> jax.Array:
  """Logits f32[b * G, M, V] predicting each completion token (teacher forcing); the updates
  use `completion_hidden` and chunked log-probs instead (no full [N, M, V] array)."""
  return model.language_model.logits(completion_hidden(
      model, prompt_ids, prompt_mask, input_features, feature_mask, completions,
      completion_mask, num_samples))


def completion_hidden(model: AudioLM, prompt_ids: jax.Array, prompt_mask: jax.Array,
                      input_features: jax.Array, feature_mask: jax.Array,
                      completions: jax.Array, completion_mask: jax.Array,
                      num_samples: int) -> jax.Array:
  """Final-normed hidden states [b * G, M, E] predicting each completion token.

  prompt_*: [b, ...] (one row per prompt), completions: int32[b * G, M] (G rows per prompt,
  contiguous). The audio is encoded once per prompt and repeated G times; only prompt
  positions take audio (a sampled `<|AUDIO|>` id in a completion stays a plain token, as in
  the sampler's decode steps).
  """
  g = num_samples
  p = prompt_ids.shape[1]
  audio_embeds, audio_lengths = model.encode_audio(input_features, feature_mask)
  audio_embeds = jnp.repeat(audio_embeds, g, axis=0)
  audio_lengths = jnp.repeat(audio_lengths, g, axis=0)
  prompt_ids = jnp.repeat(prompt_ids, g, axis=0)
  prompt_mask = jnp.repeat(prompt_mask, g, axis=0)
  ids = jnp.concatenate([prompt_ids, completions.astype(prompt_ids.dtype)], axis=1)
  mask = jnp.concatenate([prompt_mask.astype(bool), completion_mask.astype(bool)], axis=1)
  is_audio = jnp.concatenate([prompt_ids == model.config.audio_token_id,
                              jnp.zeros(completions.shape, bool)], axis=1)
  embeds = splice_audio(model.language_model.embed(ids), is_audio, audio_embeds, audio_lengths)
  hidden = model.language_model(embeds, mask)
  # Position P - 1 + t predicts completion token t.
  return hidden[:, p - 1:-1]


def _rollout_fields(r: Rollouts) -> dict[str, jax.Array]:
  return dict(completions=r.completions, completion_mask=r.completion_mask,
              loss_mask=r.loss_mask, old_logp=r.old_logp, advantages=r.advantages)


def _prompt_fields(r: Rollouts) -> dict[str, jax.Array]:
  return dict(prompt_ids=r.prompt_ids, prompt_mask=r.prompt_mask,
              input_features=r.input_features, feature_mask=r.feature_mask)


class GrpoUpdate:
  """The compiled GRPO update for one model graph, optimizer, step config and mesh."""

  def __init__(self, graphdef: nnx.GraphDef, tx: optax.GradientTransformationExtraArgs,
               config: StepConfig, mesh: Mesh, state_shardings: Any):
    self.graphdef, self.tx, self.config, self.mesh = graphdef, tx, config, mesh
    self._state_shardings = state_shardings
    self._fns: dict[Any, Any] = {}

  @property
  def compile_count(self) -> int:
    return sum(f._cache_size() for f in self._fns.values())  # pylint: disable=protected-access

  def __call__(self, state: train_lib.TrainState, rollouts: Rollouts,
               ref_params: nnx.State | None = None) -> tuple[train_lib.TrainState, dict]:
    if (self.config.loss.beta > 0) != (ref_params is not None):
      raise ValueError(f"beta={self.config.loss.beta}: reference params are needed iff beta > 0")
    return self._jitted(rollouts, ref_params)(state, rollouts, ref_params)

  def lower(self, state: train_lib.TrainState, rollouts: Rollouts,
            ref_params: nnx.State | None = None) -> jax.stages.Lowered:
    """The update lowered for these arguments (abstract ones: ShapeDtypeStructs), not run;
    `.compile()` it for its memory and cost analyses (cesar_jax.compile_check)."""
    return self._jitted(rollouts, ref_params).lower(state, rollouts, ref_params)

  def _jitted(self, rollouts: Rollouts, ref_params: nnx.State | None):
    key = ref_params is not None
    if key not in self._fns:
      rep = train_lib.replicated(self.mesh)
      ref_sh = None if ref_params is None else self._state_shardings["params"]
      self._fns[key] = jax.jit(
          self._step,
          in_shardings=(self._state_shardings, train_lib.batch_shardings(rollouts, self.mesh),
                        ref_sh),
          out_shardings=(self._state_shardings, rep),
          donate_argnums=(0,))
    return self._fns[key]

  # The jitted body.

  def _minibatch_loss(self, trainable, frozen, ref_params, mb, num_active_tokens):
    cfg = self.config
    model = nnx.merge(self.graphdef, trainable, frozen)
    def token_stats(m, entropy):
      hidden = completion_hidden(m, mb["prompt_ids"], mb["prompt_mask"], mb["input_features"],
                                 mb["feature_mask"], mb["completions"], mb["completion_mask"],
                                 cfg.num_samples)
      return grpo.chunked_logp_entropy(hidden, m.language_model.logits, mb["completions"],
                                       chunk=cfg.logits_chunk, temperature=cfg.temperature,
                                       entropy=entropy)

    stats = token_stats(model, cfg.compute_entropy)
    logp = stats["logp"]
    entropy = jax.lax.stop_gradient(stats["entropy"]) if cfg.compute_entropy else None
    ref_logp = None
    if ref_params is not None:
      ref_model = nnx.merge(self.graphdef, ref_params)
      ref_logp = jax.lax.stop_gradient(token_stats(ref_model, False)["logp"])
    loss, metrics = grpo.policy_loss(
        logp, mb["advantages"] * mb["loss_scale"], mb["loss_mask"], cfg.loss,
        old_logp=mb["old_logp"] if cfg.mu > 1 else None, ref_logp=ref_logp, entropy=entropy,
        num_active_tokens=num_active_tokens)
    metrics.pop("completion_tokens")
    metrics.pop("loss")
    # Gradient accumulation: average the k minibatch losses, except `dapo`, whose normaliser
    # is already the token count of the whole batch (see grpo.py). The scaled parts sum to the
    # batch's loss.
    scale = 1.0 if cfg.loss.aggregation == "dapo" else 1.0 / cfg.grad_accum_steps
    metrics["policy_loss"] = metrics["policy_loss"] * scale
    return loss * scale, metrics

  def _step(self, state, rollouts: Rollouts, ref_params):
    cfg = self.config
    k, g = cfg.grad_accum_steps, cfg.num_samples
    trainable, frozen = train_lib.split_trainable(state["params"])
    prompts = train_lib.minibatches(_prompt_fields(rollouts), k)
    rows = train_lib.group_minibatches(_rollout_fields(rollouts), k, g)
    num_active = jnp.sum(rollouts.loss_mask.astype(jnp.float32))
    grad_fn = jax.value_and_grad(self._minibatch_loss, has_aux=True)

    def one_pass(carry, _):
      trainable, opt_state = carry

      def accumulate(acc, mb):
        grads_sum, loss_sum = acc
        mb = dict(mb, loss_scale=rollouts.loss_scale)
        (loss, metrics), grads = grad_fn(trainable, frozen, ref_params, mb, num_active)
        return (jax.tree.map(jnp.add, grads_sum, grads), loss_sum + loss), metrics

      zeros = jax.tree.map(jnp.zeros_like, trainable)
      (grads, loss), metrics = jax.lax.scan(
          accumulate, (zeros, jnp.zeros((), jnp.float32)), {**prompts, **rows})
      policy_loss = jnp.sum(metrics.pop("policy_loss"))
      metrics = train_lib.mean_metrics(metrics)
      metrics.update(loss=loss, policy_loss=policy_loss, grad_norm=optax.global_norm(grads))
      trainable, opt_state = train_lib.apply_gradients(self.tx, trainable, opt_state, grads, loss)
      return (trainable, opt_state), metrics

    (trainable, opt_state), metrics = jax.lax.scan(
        one_pass, (trainable, state["opt_state"]), None, length=cfg.mu)
    metrics = train_lib.mean_metrics(metrics)
    metrics.update(optim.optimizer_metrics(opt_state))
    new_state = {"params": train_lib.merge_trainable(trainable, frozen), "opt_state": opt_state}
    return new_state, metrics


@functools.partial(jax.jit, static_argnames=("estimator", "num_samples"))
def advantages(rewards: jax.Array, *, estimator: str, num_samples: int) -> jax.Array:
  """f32[N] total rewards -> f32[N] advantages by the registered estimator."""
  return grpo.get_advantage_estimator(estimator)(rewards, num_samples)
