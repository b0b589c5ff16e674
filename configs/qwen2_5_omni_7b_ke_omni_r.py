r"""Ke-Omni-R's recipe (CESAR's baseline; shared/REFERENCES.md) on Qwen2.5-Omni-7B.

GRPO with TRL-style settings: G = 8 samples per prompt, KL beta 0.01 (k3), reward accuracy 2 +
format 1 (format: `<think>.*?</think>\s*<answer>.*?</answer>`), 64-token completions
(max_completion_length), and the think budget stated in the prompt only: "Output the thinking
process (less than N words) in <think> </think> and final answer in <answer> </answer>."
(budget mode "prompted"; the sampler forces nothing). Ke-Omni-R reports 74.60 on MMAU
test-mini (reasoning) and a flat scaling slope (-0.007 points per think token). N, the learning
rate, batch size, temperature and step count are not in our references: our choice, marked.

  python -m cesar_jax.main \
      --config=configs/qwen2_5_omni_7b_ke_omni_r.py:init_from=/ckpt/Qwen2.5-Omni-7B,data_dir=/data/avqa_tfds \
      --workdir=gs://bucket/ke_omni_r

Hardware: 8+ accelerator chips; not run by this project, so no time is claimed here.
"""

import pathlib
import sys

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])  # the repo root, for `configs.common`
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
from cesar_jax import config as config_lib  # noqa: E402
from configs import qwen2_5_omni_7b  # noqa: E402


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, job="grpo", steps=1000, init_from="", data_dir="",
                             think_words=50)
  config = qwen2_5_omni_7b.make(arg, job=arg.job, steps=arg.steps, reward_preset="ke_omni_r")

  # Data section.
  config.data.batch_size = 16  # prompts per step: our choice
  config.data.buckets = (1024,)

  # Sampling section: Ke-Omni-R.
  config.sampling.num_samples = 8  # G = 8
  config.sampling.temperature = 1.0  # our choice (TRL's default)
  config.sampling.max_new_tokens = 64  # max_completion_length 64
  config.sampling.budget_mode = "prompted"  # "less than N words", stated in the prompt
  config.sampling.think_budget = arg.think_words  # N = 50 words: our choice

  # Rewards section: accuracy 2, format 1 (the "ke_omni_r" preset, restated here).
  config.rewards.weights.accuracy = 2.0
  config.rewards.weights.format = 1.0

  # GRPO section.
  config.grpo.advantage = "group"  # TRL's (r - mean) / (std + 1e-4)
  config.grpo.loss_aggregation = "grpo"
  config.grpo.beta = 0.01  # Ke-Omni-R
  config.grpo.mu = 1
  config.grpo.grad_accum_steps = 2  # memory: our choice

  # Optimizer section.
  config.optim.lr = 1e-6  # our choice (R1-AQA's; not in our references for Ke-Omni-R)
  config.optim.warmup_steps = 0

  config.lock()
  return config
