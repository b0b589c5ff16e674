r"""CESAR's recipe (configs/qwen2_audio_7b_cesar.py) with LoRA adapters, for one small TPU slice.

Full GRPO on a 7B holds float32 master weights, their Adam moments and a reference model: far
beyond 8 chips of 16 GiB. With LoRA only rank-16 adapters on the decoder's seven projections
train (float32 masters, ~40M parameters); the base loads once, frozen, in bfloat16, and the KL
reference is the base itself (the adapters at their start), not a second copy. Sized for a
v5e-8 (`v5e:2x4`): 8 prompts a step (CESAR's 32, over 4 accumulation-free steps of a pod),
K = 8. What is not CESAR's (rank, alpha, lr, batch) is our choice.

  python -m cesar_jax.main \
      --config=configs/qwen2_audio_7b_cesar_lora.py:init_from=/ckpt/Qwen2-Audio-7B-Instruct,data_dir=/data/avqa_tfds \
      --workdir=gs://bucket/cesar_lora
  # memory and cost on the slice, without one:
  python -m cesar_jax.main --config=configs/qwen2_audio_7b_cesar_lora.py --config.job=compile_check \
      --config.compile_check.topology=v5e:2x4 --workdir=/tmp/cc_lora

Export after training (merged Hugging Face checkpoint + the adapters alone), in Python:
`cesar_jax.lora.export(model_store.restore_model(WORKDIR)[0], OUT, config.lora)`.
"""

import pathlib
import sys

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])  # the repo root, for `configs.common`
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
from cesar_jax import config as config_lib  # noqa: E402
from configs import qwen2_audio_7b_cesar  # noqa: E402


def apply_lora_recipe(config):
  """The adapters and the v5e-8 sizing on a (unlocked) CESAR 7B config, in place."""
  # LoRA section: rank 16, alpha 32 on q, k, v, o, gate, up, down of every decoder layer.
  config.lora.rank = 16
  config.lora.alpha = 32.0

  # Data section: 8 prompts a step on one v5e-8 (our choice; CESAR: 32 on 8 H200s).
  config.data.batch_size = 8  # mesh (1, 1, 8) on 8 chips: tensor parallelism, no batch split
  # Four minibatches of 2 prompts x K = 8: the update's activations at one minibatch fit
  # (docs/scaling.md: one minibatch of 8 prompts needs 29 GiB per chip).
  config.grpo.grad_accum_steps = 4
  config.sft.batch_size = 8  # a cold start on the slice, if wanted: 4 minibatches of 2
  config.sft.grad_accum_steps = 4

  # Optimizer section: adapters learn at a larger lr than full weights (our choice).
  config.optim.lr = 1e-4
  return config


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, job="grpo", steps=1000, init_from="", data_dir="")
  config = qwen2_audio_7b_cesar.get_config(
      f"job={arg.job},steps={arg.steps},init_from={arg.init_from},data_dir={arg.data_dir}")
  with config.unlocked():
    apply_lora_recipe(config)
  config.lock()
  return config
