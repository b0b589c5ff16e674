r"""The main job (`make demo`): does process reward change how accuracy scales with thinking?

From nothing, on the synthetic audio-reasoning set (count the beeps in a 2 s clip), on 2 CPU
cores: a tiny Qwen2-Audio-architecture model (~0.5M parameters) is trained from scratch
with cold-start SFT on reasoning traces (corruptions included), then GRPO runs twice from that
checkpoint with identical seeds and steps, once with the outcome rewards (accuracy + format,
the RLVR baseline) and once with CESAR's (accuracy 5, format, consistency, keywords,
overthinking 1 each; arXiv 2510.20867), and the three models are swept over think budgets
0..250 (CESAR's protocol) on held-out test items. Output: runs/demo/report.md (+ .json, PNGs).

  make demo                                   # = the command below
  python -m cesar_jax.main --config=configs/demo.py --workdir=runs/demo
  python -m cesar_jax.main --config=configs/demo.py:scale=4 --workdir=runs/demo_x4   # longer

Budget: about 6 minutes on 2 CPU cores at scale=1 (docs/results.md has the measured times
and what the curves showed). `scale` multiplies training steps and evaluation items.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repo root
import ml_collections  # noqa: E402

from cesar_jax import config as config_lib  # noqa: E402
from configs import eval_scaling, synthetic_tiny  # noqa: E402


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, scale=1, seed=0)
  s = arg.scale
  config = ml_collections.ConfigDict()
  config.job = "demo"
  config.seed = arg.seed
  config.stages = {}

  # SFT stage: the tiny model from scratch on traces.
  config.stages.sft = synthetic_tiny.get_config(f"job=sft,sft_steps={300 * s},examples={512 * s}")

  # GRPO stages: identical but for the reward preset.
  for reward in ("outcome", "cesar"):
    config.stages[reward] = synthetic_tiny.get_config(
        f"job=grpo,steps={30 * s},reward={reward},examples={512 * s}")

  # Data section (every training stage): "count the beeps", 1 to 5 of them, so 4 options and
  # chance 25%. The tiny model learns it from scratch in 300 SFT steps (it counts in its trace).
  for stage in config.stages.values():
    with stage.unlocked():
      stage.data.question_types = ("count_beeps",)
      stage.data.synthetic.max_count = 5

  # Eval stage: CESAR's budget sweep on held-out items of the same kind.
  config.stages.eval = eval_scaling.get_config(f"num_items={48 * s}")
  train_data = config.stages.sft.data
  with config.stages.eval.unlocked():
    for key in ("question_types", "tasks", "chunk_seconds", "n_mels"):
      config.stages.eval.data[key] = train_data[key]
    config.stages.eval.data.synthetic = train_data.synthetic
    config.stages.eval.data.buckets = train_data.buckets
    config.stages.eval.mesh = config.stages.sft.mesh

  for stage in config.stages.values():
    with stage.unlocked():
      stage.seed = arg.seed
  config.lock()
  return config
