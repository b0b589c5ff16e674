"""Tunix's GRPOLearner on the benchmark's work (run by benchmarks/grpo_step.py in Tunix's venv).

argv[1]: the work as JSON (see benchmarks/grpo_step.py). Prints one JSON line. Tunix's Qwen2
zeroes its MLP weights and draws embeddings N(0, 1) at init, so every weight is re-drawn
N(0, 0.02) for a random model like the others'; its mesh has Auto axes (jax 0.10's default
Explicit axes break its embedding lookup); the KL is k3 (`kl_loss_mode="low_var_kl"`), as ours
and TRL's; the sampler gets a new seed every step.
"""

import json
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from transformers import PreTrainedTokenizerFast
from tunix.models.qwen2 import model as qwen2
from tunix.rl import rl_cluster as rl_cluster_lib
from tunix.rl.grpo import grpo_learner
from tunix.rl.rollout import base_rollout

TOKENIZER = pathlib.Path(__file__).resolve().parents[2] / "cesar_jax" / "assets" / "tokenizer.json"


def _model(work, vocab, seed):
  cfg = qwen2.ModelConfig(
      num_layers=work["num_hidden_layers"], vocab_size=vocab, embed_dim=work["hidden_size"],
      hidden_dim=work["intermediate_size"], num_heads=work["num_attention_heads"],
      head_dim=work["hidden_size"] // work["num_attention_heads"],
      num_kv_heads=work["num_key_value_heads"], rope_theta=10000, norm_eps=1e-6)
  model = qwen2.Qwen2(cfg, rngs=nnx.Rngs(seed))
  graphdef, state = nnx.split(model)
  leaves, tree = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  leaves = [x if x.ndim < 2 else 0.02 * jax.random.normal(k, x.shape, x.dtype)
            for x, k in zip(leaves, keys)]
  return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves))


def main() -> None:
  work = json.loads(sys.argv[1])
  tok = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER), pad_token="<|endoftext|>",
                                eos_token="<|im_end|>")
  mesh = jax.make_mesh((1, 1), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  actor, reference = _model(work, len(tok), 0), _model(work, len(tok), 0)
  total = work["steps"] + work["warmup"]
  cluster_config = rl_cluster_lib.ClusterConfig(
      role_to_mesh={role: mesh for role in (rl_cluster_lib.Role.ACTOR,
                                            rl_cluster_lib.Role.REFERENCE,
                                            rl_cluster_lib.Role.ROLLOUT)},
      rollout_engine="vanilla", offload_to_cpu=False,
      training_config=rl_cluster_lib.RLTrainingConfig(
          actor_optimizer=optax.adamw(1e-5), eval_every_n_steps=10**9, max_steps=total,
          mini_batch_size=work["prompts"], train_micro_batch_size=work["prompts"]),
      rollout_config=base_rollout.RolloutConfig(
          max_tokens_to_generate=work["new_tokens"], max_prompt_length=work["prompt_tokens"],
          kv_cache_size=work["prompt_tokens"] + work["new_tokens"] + 8,
          temperature=work["temperature"], top_p=1.0, top_k=None))
  cluster = rl_cluster_lib.RLCluster(actor=actor, reference=reference, tokenizer=tok,
                                     cluster_config=cluster_config)
  config = grpo_learner.GRPOConfig(num_generations=work["num_samples"], num_iterations=1,
                                   beta=work["beta"], kl_loss_mode="low_var_kl", epsilon=0.2)

  def reward(prompts, completions, **kwargs):
    return [float(len(c) % 5) for c in completions]

  learner = grpo_learner.GRPOLearner(rl_cluster=cluster, algo_config=config, reward_fns=reward)
  words = " ".join(["beep"] * work["prompt_tokens"])
  prompt = tok.decode(tok(words)["input_ids"][:work["prompt_tokens"]])
  batches = [{"prompts": np.array([prompt] * work["prompts"])} for _ in range(total)]

  steps, sampling = [], []
  generate = cluster.generate

  def timed_generate(*a, **k):
    t0 = time.perf_counter()
    out = generate(*a, **k)
    sampling.append(time.perf_counter() - t0)
    return out

  cluster.generate = timed_generate
  train_step = cluster.update_actor

  def timed_update(*a, **k):
    t0 = time.perf_counter()
    out = train_step(*a, **k)
    jax.block_until_ready(jax.tree.leaves(nnx.state(cluster.actor_trainer.model)))
    steps.append(time.perf_counter() - t0)
    return out

  cluster.update_actor = timed_update
  t0 = time.perf_counter()
  learner.train(batches)
  wall = time.perf_counter() - t0
  w = work["warmup"]
  upd, gen = steps[w:], sampling[w:len(steps)]
  per_step = [u + g for u, g in zip(upd, gen)]
  print(json.dumps({"impl": "tunix", "s_per_step": statistics.median(per_step),
                    "sampling_s": statistics.median(gen), "update_s": statistics.median(upd),
                    "params": int(sum(x.size for x in jax.tree.leaves(nnx.state(actor)))),
                    "wall_s": wall, "steps_seen": len(steps)}))


if __name__ == "__main__":
  main()
