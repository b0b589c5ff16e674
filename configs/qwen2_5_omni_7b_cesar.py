r"""CESAR's published GRPO recipe (Fan et al., ICLR 2026, arXiv 2510.20867) on Qwen2.5-Omni-7B.

CESAR's own base model: K = 8 samples per prompt, AdamW at lr 1e-5, global batch 32 prompts,
reward R = 5 R_acc + R_format + R_consistency + R_keywords + R_overthinking with L_max_output =
256 think tokens, advantages A = R - mean_K(R) (no std scaling), AVQA training data. Values the
paper does not publish (KL beta, clip epsilon, temperature, steps, warmup) are marked "our
choice". CESAR reports 77.10 on MMAU test-mini (reasoning; base Qwen2.5-Omni-7B 65.20) after
61 h on 8 H200s, and a positive test-time scaling slope (+0.038 points per think token).

  python -m cesar_jax.main \
      --config=configs/qwen2_5_omni_7b_cesar.py:init_from=/ckpt/Qwen2.5-Omni-7B,data_dir=/data/avqa_tfds \
      --workdir=gs://bucket/cesar_omni

Expect the think length to settle well under 256 tokens and the MMAU accuracy of the forced
budget sweep (job eval_scaling) to rise with the budget instead of falling. Not run by this
project: no time is claimed.
"""

import pathlib
import sys

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])  # the repo root, for `configs.common`
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
from cesar_jax import config as config_lib  # noqa: E402
from configs import qwen2_5_omni_7b, qwen2_audio_7b_cesar  # noqa: E402


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, job="grpo", steps=1000, init_from="", data_dir="")
  config = qwen2_5_omni_7b.make(arg, job=arg.job, steps=arg.steps, reward_preset="cesar")
  qwen2_audio_7b_cesar.apply_recipe(config, arg.steps)  # the same published values
  config.lock()
  return config
