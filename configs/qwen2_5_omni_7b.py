r"""The Qwen2.5-Omni-7B thinker at its real shape: the base of the Omni recipes.

The model section is the `qwen2_5_omni_7b` preset (Qwen Team 2025, arXiv 2503.20215; every
number is transformers' Qwen2.5-Omni config default, see cesar_jax/models/config.py): the
chunked audio encoder (1280 wide, 32 layers, chunks of 200 frames = 2 s), 28 decoder layers of
width 3584 with GQA 28:4, a 152,064-entry vocabulary. Float32 master parameters (what the
optimizer updates) and bfloat16 compute; logits stay float32. `init_from` is a Hugging Face
directory: a standalone thinker or the full Qwen2.5-Omni-7B release (its talker, vocoder and
vision tower are skipped on load); its tokenizer.json brings the thinker's chat template.
Audio: 128 mels, clips up to 30 s here (750 audio tokens; the encoder takes longer clips, raise
data.chunk_seconds and the bucket with it), prompts up to 1024 tokens.

The default job trains with GRPO and this file's defaults (CESAR's rewards); the recipes are
configs/qwen2_5_omni_7b_cesar.py and configs/qwen2_5_omni_7b_ke_omni_r.py.

  python -m cesar_jax.main \
      --config=configs/qwen2_5_omni_7b.py:init_from=/ckpt/Qwen2.5-Omni-7B,data_dir=/data/avqa_tfds \
      --workdir=gs://bucket/omni7b

Needs an accelerator pod (float32 masters alone are ~36 GB, Adam's moments twice that: FSDP
over 8+ chips, launch/tpu_pod.sh). Not run on CPU.
"""

import pathlib
import sys

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])  # the repo root, for `configs.common`
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
from cesar_jax import config as config_lib  # noqa: E402
from configs import common  # noqa: E402


def make(arg, *, job: str, steps: int, reward_preset: str):
  """The Omni 7B base config (shared by the recipe files); `arg` from `parse_arg`."""
  config = common.base(job=job, steps=steps, reward_preset=reward_preset,
                       model_preset="qwen2_5_omni_7b")
  config.init_from = arg.init_from  # a HF directory: config.json + safetensors + tokenizer.json
  config.log_every = 1
  config.checkpoint_every = 50

  # Model section: float32 masters, bfloat16 compute (logits stay float32).
  config.model = common.model("qwen2_5_omni_7b", dtype="bfloat16", param_dtype="float32",
                              remat="full")  # layers recomputed in the backward pass (docs/scaling.md)

  # Mesh section: FSDP over the chips, 8-way tensor parallelism within.
  config.mesh.shape = (1, -1, 8)  # FSDP x 8-way tensor parallelism: fits v5e:8x8 (docs/scaling.md)

  # Data section: AVQA in R1-AQA's format, prepared with cesar_jax.data.builders.
  config.data.name = "avqa"
  config.data.dir = arg.data_dir
  config.data.split = "train"
  config.data.chunk_seconds = 30.0  # AVQA clips are ~10 s; the Omni encoder has no 30 s cap
  config.data.n_mels = 128
  config.data.buckets = (1024,)  # up to 750 audio tokens + the question and options
  config.data.worker_count = 4
  return config


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, job="grpo", steps=100, init_from="", data_dir="")
  config = make(arg, job=arg.job, steps=arg.steps, reward_preset="cesar")
  config.lock()
  return config
