r"""R1-AQA's recipe (xiaomi-research/r1-aqa, arXiv 2503.11197) on Qwen2-Audio-7B-Instruct.

GRPO on AVQA with TRL 0.15's settings as R1-AQA ran them: G = 8 samples per prompt at
temperature 1.0, lr 1e-6, KL beta 0.04 (k3 estimator), max_completion_length 256, one update
per sampled batch (mu = 1: the ratio stays 1, nothing is clipped), advantages (r - mean) /
(std + 1e-4) within each group. Rewards: accuracy (answer text inside <answer> equals the
correct option's) + format; the prompt asks only for "<answer> </answer>" (budget 0, prompted),
so the format expected is the answer-only one. R1-AQA reports 64.5 on MMAU test-mini.

  python -m cesar_jax.main \
      --config=configs/qwen2_audio_7b_r1aqa.py:init_from=/ckpt/Qwen2-Audio-7B-Instruct,data_dir=/data/avqa_tfds \
      --workdir=gs://bucket/r1aqa

Hardware: 8+ accelerator chips (R1-AQA used 8 GPUs); not run by this project, so no time is
claimed here. Batch size and step count are not in our references: our choice, marked below.
"""

import pathlib
import sys

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])  # the repo root, for `configs.common`
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
from cesar_jax import config as config_lib  # noqa: E402
from configs import qwen2_audio_7b  # noqa: E402


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, job="grpo", steps=1000, init_from="", data_dir="")
  config = qwen2_audio_7b.make(arg, job=arg.job, steps=arg.steps, reward_preset="outcome")

  # Data section.
  config.data.batch_size = 16  # prompts per step: not in our references (our choice)

  # Sampling section: R1-AQA (arXiv 2503.11197).
  config.sampling.num_samples = 8
  config.sampling.temperature = 1.0
  config.sampling.max_new_tokens = 256  # max_completion_length
  config.sampling.budget_mode = "prompted"
  config.sampling.think_budget = 0  # "Output the final answer in <answer> </answer>."

  # GRPO section: TRL 0.15 GRPOTrainer as R1-AQA used it.
  config.grpo.advantage = "group"  # (r - mean) / (std + 1e-4)
  config.grpo.loss_aggregation = "grpo"
  config.grpo.beta = 0.04
  config.grpo.mu = 1
  config.grpo.grad_accum_steps = 2  # memory: our choice

  # Optimizer section.
  config.optim.lr = 1e-6
  config.optim.warmup_steps = 0
  config.optim.end_lr_ratio = 1.0  # constant lr (our choice; not in our references)

  config.lock()
  return config
