"""The GRPO update: one jitted function of (train state, rollouts) with donated state.

    update = GrpoUpdate(graphdef, tx, StepConfig(...), mesh, state_shardings)
    state, metrics = update(state, rollouts, ref_params)    # ref_params None when beta == 0

`ref_params` is the reference policy's trainable part (`train_lib.split_trainable`): merged with
the policy's own frozen part, so LoRA's reference is the fresh adapters over the shared base.

Inside, for each of `mu` passes (one optimizer update each), the B prompts are split into
`grad_accum_steps` minibatches of whole groups (B / k prompts and their G rollouts); a
`lax.scan` over them accumulates the gradient of the clipped GRPO loss (cesar_jax.rl.grpo), and
optax applies it (AdamW, schedule, clipping; skipped when the loss or a gradient is not finite).
Per minibatch the audio of each prompt is encoded ONCE and its embeddings repeated for the G
rollouts; logits are divided by the sampling temperature before the log-softmax. Reference
log-probs are computed (without gradient) only when beta > 0.

Precision. The train state holds the master parameters (`model.param_dtype`, float32 in every
recipe); each optimizer update casts them ONCE to the compute dtype (`model.dtype`, bfloat16 on
accelerators), differentiates the loss with respect to that copy, accumulates the minibatch
gradients in float32 and applies the update to the masters, so an Adam step far below a
bfloat16 ulp still lands (MaxText's `weight_dtype` / `dtype`). With equal dtypes the casts are
the identity.

Old log-probs (mu > 1). `StepConfig.old_logp = "recompute"` (default, as TRL does for
`num_iterations > 1`): pass 0 scores the rollouts under the pre-update policy (ratio exactly 1)
and keeps those teacher-forced log-probs as the old ones of passes 1..mu-1. `"sampler"` uses
the sampler's log-probs (bf16 KV-cache decode) instead. With mu == 1 the ratio is 1.

`logp_gap/mean`, `logp_gap/max`: |sampler log-prob - training forward's| on the scored
(sampled, unforced) tokens, from pass 0: the first health signal of a loop whose rollout and
training paths differ (cache dtype, kernels, numerics).

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


OLD_LOGP_SOURCES = ("recompute", "sampler")


def cast_floating(tree: Any, dtype: Any) -> Any:
  """Floating leaves cast to `dtype` (the compute copy of master parameters); others as is."""
  dtype = jnp.dtype(dtype)
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static settings of the update (hashable; changing one recompiles)."""
  loss: grpo.LossConfig
  num_samples: int  # G
  grad_accum_steps: int = 1  # minibatches per optimizer update
  mu: int = 1  # optimizer updates per sampled batch
  temperature: float = 1.0
  compute_entropy: bool = True
  old_logp: str = "recompute"  # recompute | sampler (see the module docstring; mu > 1 only)
  compute_dtype: str = "float32"  # the forward/backward dtype; the state holds the masters
  # Completion positions per chunk of log-probs from hidden states (grpo.chunked_logp_entropy):
  # never a full f32[N, M, V] logits array; 0 = the full logits at once.
  logits_chunk: int = grpo.DEFAULT_LOGITS_CHUNK

  def __post_init__(self):
    if self.logits_chunk < 0:
      raise ValueError(f"StepConfig: logits_chunk must be >= 0 (0 = unchunked): {self}")
    if self.num_samples < 1 or self.grad_accum_steps < 1 or self.mu < 1:
      raise ValueError(f"StepConfig: num_samples, grad_accum_steps and mu must be >= 1: {self}")
    if self.old_logp not in OLD_LOGP_SOURCES:
      raise ValueError(f"StepConfig.old_logp={self.old_logp!r}; choose from {OLD_LOGP_SOURCES}")
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
  contiguous). Each group's prompt (its audio encoded and spliced in) runs through the decoder
  ONCE and its G completions attend to it (`Decoder.shared_prefix`): the values of the full
  forward of [prompt; completion] per row, without G copies of the prompt's work (the prompt
  is most of a rollout's tokens: 750 audio tokens per 30 s clip). Only prompt positions take
  audio (a sampled `<|AUDIO|>` id in a completion stays a plain token, as in the sampler's
  decode steps).
  """
  g = num_samples
  lm = model.language_model
  audio_embeds, audio_lengths = model.encode_audio(input_features, feature_mask)
  prompt_embeds = splice_audio(lm.embed(prompt_ids), prompt_ids == model.config.audio_token_id,
                               audio_embeds, audio_lengths)
  prefix, rows = lm.shared_prefix(prompt_embeds, prompt_mask, lm.embed(completions),
                                  completion_mask, g)
  # Position P - 1 + t predicts completion token t: the prompt's last position predicts the
  # first token, each completion position the next one.
  return jnp.concatenate([jnp.repeat(prefix[:, -1:], g, axis=0), rows[:, :-1]], axis=1)


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
      # The reference is the policy's trainable part at the start (its frozen part is the
      # policy's own): a full copy for full fine-tuning, the fresh adapters with LoRA.
      ref_sh = None if ref_params is None else train_lib.split_trainable(
          self._state_shardings["params"])[0]
      self._fns[key] = jax.jit(
          self._step,
          in_shardings=(self._state_shardings, train_lib.batch_shardings(rollouts, self.mesh),
                        ref_sh),
          out_shardings=(self._state_shardings, rep),
          donate_argnums=(0,))
    return self._fns[key]

  # The jitted body.

  def _minibatch_loss(self, trainable, frozen, ref_params, mb, old_mb, first,
                      num_active_tokens):
    """The loss of one minibatch.

    `old_mb`: None (mu == 1: on-policy, ratio 1) or f32[rows, M] old log-probs; where `first`
    (pass 0 of "recompute") the minibatch's own log-probs stand in for them (ratio exactly 1).
    Returns (loss, (metrics, stop_gradient(logp))).
    """
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
      ref_model = nnx.merge(self.graphdef, ref_params, frozen)
      ref_logp = jax.lax.stop_gradient(token_stats(ref_model, False)["logp"])
    old_logp = None
    if old_mb is not None:
      old_logp = jnp.where(first, jax.lax.stop_gradient(logp), old_mb)
    loss, metrics = grpo.policy_loss(
        logp, mb["advantages"] * mb["loss_scale"], mb["loss_mask"], cfg.loss,
        old_logp=old_logp, ref_logp=ref_logp, entropy=entropy,
        num_active_tokens=num_active_tokens)
    metrics.pop("completion_tokens")
    metrics.pop("loss")
    # Gradient accumulation: average the k minibatch losses, except `dapo`, whose normaliser
    # is already the token count of the whole batch (see grpo.py). The scaled parts sum to the
    # batch's loss.
    scale = 1.0 if cfg.loss.aggregation == "dapo" else 1.0 / cfg.grad_accum_steps
    metrics["policy_loss"] = metrics["policy_loss"] * scale
    # Sampler vs training forward on the scored tokens (summed here, normalised in `_step`).
    scored = mb["loss_mask"].astype(bool)
    gap = jnp.where(scored, jnp.abs(jax.lax.stop_gradient(logp) - mb["old_logp"]), 0.0)
    metrics["logp_gap/sum"] = jnp.sum(gap)
    metrics["logp_gap/max"] = jnp.max(gap, initial=0.0)
    return loss * scale, (metrics, jax.lax.stop_gradient(logp))

  def _step(self, state, rollouts: Rollouts, ref_params):
    cfg = self.config
    k, g = cfg.grad_accum_steps, cfg.num_samples
    trainable, frozen = train_lib.split_trainable(state["params"])
    compute_frozen = cast_floating(frozen, cfg.compute_dtype)
    prompts = train_lib.minibatches(_prompt_fields(rollouts), k)
    rows = train_lib.group_minibatches(_rollout_fields(rollouts), k, g)
    num_active = jnp.sum(rollouts.loss_mask.astype(jnp.float32))
    grad_fn = jax.value_and_grad(self._minibatch_loss, has_aux=True)
    recompute = cfg.mu > 1 and cfg.old_logp == "recompute"

    def one_pass(carry, pass_index):
      trainable, opt_state, old_mbs = carry
      compute = cast_floating(trainable, cfg.compute_dtype)  # once per optimizer update
      first = pass_index == 0 if recompute else False

      def accumulate(acc, xs):
        grads_sum, loss_sum = acc
        mb, old_mb = xs
        mb = dict(mb, loss_scale=rollouts.loss_scale)
        (loss, (metrics, logp)), grads = grad_fn(
            compute, compute_frozen, ref_params, mb, old_mb, first, num_active)
        grads_sum = jax.tree.map(lambda a, b: a + b.astype(a.dtype), grads_sum, grads)
        return (grads_sum, loss_sum + loss), (metrics, logp)

      zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), trainable)
      (grads, loss), (metrics, logp) = jax.lax.scan(
          accumulate, (zeros, jnp.zeros((), jnp.float32)), ({**prompts, **rows}, old_mbs))
      policy_loss = jnp.sum(metrics.pop("policy_loss"))
      gap_sum = jnp.sum(metrics.pop("logp_gap/sum"))
      metrics = train_lib.mean_metrics(metrics)
      metrics.update(loss=loss, policy_loss=policy_loss, grad_norm=optax.global_norm(grads))
      metrics["logp_gap/mean"] = gap_sum / jnp.maximum(num_active, 1.0)
      grads = jax.tree.map(lambda gr, p: gr.astype(p.dtype), grads, trainable)
      trainable, opt_state = train_lib.apply_gradients(self.tx, trainable, opt_state, grads, loss)
      if recompute:  # pass 0's teacher-forced log-probs are the old ones from now on
        old_mbs = jnp.where(first, logp, old_mbs)
      return (trainable, opt_state, old_mbs), metrics

    if cfg.mu == 1:
      old0 = None
    elif recompute:
      old0 = jnp.zeros(rows["old_logp"].shape, jnp.float32)  # replaced in pass 0
    else:
      old0 = rows["old_logp"].astype(jnp.float32)
    (trainable, opt_state, _), metrics = jax.lax.scan(
        one_pass, (trainable, state["opt_state"], old0), jnp.arange(cfg.mu))
    gap = {key: metrics.pop(key)[0] for key in ("logp_gap/mean", "logp_gap/max")}  # pass 0
    metrics = train_lib.mean_metrics(metrics)
    metrics.update(gap)
    metrics.update(optim.optimizer_metrics(opt_state))
    new_state = {"params": train_lib.merge_trainable(trainable, frozen), "opt_state": opt_state}
    return new_state, metrics


@functools.partial(jax.jit, static_argnames=("estimator", "num_samples"))
def advantages(rewards: jax.Array, *, estimator: str, num_samples: int) -> jax.Array:
  """f32[N] total rewards -> f32[N] advantages by the registered estimator."""
  return grpo.get_advantage_estimator(estimator)(rewards, num_samples)
