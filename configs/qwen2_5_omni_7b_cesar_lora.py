r"""CESAR's recipe on the Qwen2.5-Omni-7B thinker with LoRA adapters, for one small TPU slice.

The Omni twin of configs/qwen2_audio_7b_cesar_lora.py: CESAR's published values
(configs/qwen2_5_omni_7b_cesar.py) with rank-16 adapters on the decoder's seven projections
(float32), the thinker frozen in bfloat16, the KL reference the base itself; sized for a v5e-8
(`v5e:2x4`): 8 prompts a step in four minibatches of 2 x K = 8, mesh (1, 1, 8). What is not
CESAR's (rank, alpha, lr, batch) is our choice.

  python -m cesar_jax.main \
      --config=configs/qwen2_5_omni_7b_cesar_lora.py:init_from=/ckpt/Qwen2.5-Omni-7B,data_dir=/data/avqa_tfds \
      --workdir=gs://bucket/cesar_omni_lora
  python -m cesar_jax.main --config=configs/qwen2_5_omni_7b_cesar_lora.py --config.job=compile_check \
      --config.compile_check.topology=v5e:2x4 --workdir=/tmp/cc_omni_lora
"""

import pathlib
import sys

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])  # the repo root, for `configs.common`
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
from cesar_jax import config as config_lib  # noqa: E402
from configs import qwen2_5_omni_7b_cesar, qwen2_audio_7b_cesar_lora  # noqa: E402


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, job="grpo", steps=1000, init_from="", data_dir="")
  config = qwen2_5_omni_7b_cesar.get_config(
      f"job={arg.job},steps={arg.steps},init_from={arg.init_from},data_dir={arg.data_dir}")
  with config.unlocked():
    qwen2_audio_7b_cesar_lora.apply_lora_recipe(config)  # the same adapters and sizing
  config.lock()
  return config
