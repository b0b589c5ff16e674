r"""Qwen2-Audio-7B(-Instruct) at its real shape: the base of the 7B recipes.

The model section is the `qwen2_audio_7b` preset (Chu et al. 2024, arXiv 2407.10759: Whisper-
large-v3 encoder, 32 decoder layers of width 4096, 156,032-entry vocabulary) in bfloat16, read
from a Hugging Face checkpoint directory; the tokenizer is that directory's tokenizer.json.
Audio is Whisper's 30 s window with 128 mels (750 audio tokens), so prompts go to 1024 tokens.

The default job is `grpo` with this file's defaults (`job=sft` also runs); the recipes are
configs/qwen2_audio_7b_r1aqa.py and configs/qwen2_audio_7b_cesar.py. Parameters are held in
float32 (the optimizer's master weights: an Adam step of ~1e-5 is below half a bfloat16 ulp of
most weights and would round to nothing) and every forward, backward and sampling step runs in
bfloat16, cast once per step.

  python -m cesar_jax.main \
      --config=configs/qwen2_audio_7b.py:init_from=/ckpt/Qwen2-Audio-7B-Instruct \
      --workdir=/tmp/q7b_forward

Needs an accelerator host (float32 masters are ~33 GB, their Adam moments twice that: FSDP over
a slice, launch/tpu_pod.sh). Not run on CPU.
"""

import pathlib
import sys

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])  # the repo root, for `configs.common`
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
from cesar_jax import config as config_lib  # noqa: E402
from configs import common  # noqa: E402


def make(arg, *, job: str, steps: int, reward_preset: str):
  """The 7B base config (shared by the recipe files); `arg` from `parse_arg`."""
  config = common.base(job=job, steps=steps, reward_preset=reward_preset,
                       model_preset="qwen2_audio_7b")
  config.init_from = arg.init_from  # a HF directory: config.json + safetensors + tokenizer.json
  config.log_every = 1
  config.checkpoint_every = 50

  # Model section: float32 master parameters, bfloat16 compute (logits stay float32).
  config.model = common.model("qwen2_audio_7b", dtype="bfloat16", param_dtype="float32",
                              remat="full")  # layers recomputed in the backward pass (docs/scaling.md)

  # Mesh section: FSDP over the chips, 8-way tensor parallelism within.
  config.mesh.shape = (1, -1, 8)  # FSDP x 8-way tensor parallelism: fits v5e:8x8 (docs/scaling.md)

  # Data section: AVQA in R1-AQA's format, prepared with cesar_jax.data.builders.
  config.data.name = "avqa"
  config.data.dir = arg.data_dir
  config.data.split = "train"
  config.data.chunk_seconds = 30.0
  config.data.n_mels = 128
  config.data.buckets = (1024,)  # 750 audio tokens + the question and options
  config.data.worker_count = 4
  return config


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, job="grpo", steps=100, init_from="", data_dir="")
  config = make(arg, job=arg.job, steps=arg.steps, reward_preset="cesar")
  config.lock()
  return config
