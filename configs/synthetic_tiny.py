r"""The CPU default: a tiny Qwen2-Audio learns the synthetic set, cold-start SFT then GRPO.

Reproduces, in miniature, the CESAR pipeline (arXiv 2510.20867): supervised cold start on
reasoning traces, then GRPO with the CESAR process rewards (accuracy 5, format, consistency,
keywords, overthinking 1 each; K = 4 samples here instead of 8). Model: the `tiny` preset
(width 64, two layers per side, 0.29M parameters); data: the synthetic "count_beeps" and
"pitch_compare" questions on 2 s clips (50 audio tokens), which a tiny model can learn.

Run (wall times measured on the project's 2-core CPU machine while other jobs shared it, load
~5: SFT 300 steps 6 min, i.e. ~1.0 s/step plus ~40 s of start-up and compiling; GRPO 60 steps
3 min, ~2.3 s/step of which sampling ~0.3, update ~1.4, plus ~45 s; an idle machine is faster):

  python -m cesar_jax.main --config=configs/synthetic_tiny.py:job=sft --workdir=runs/tiny_sft
  python -m cesar_jax.main --config=configs/synthetic_tiny.py:init_from=runs/tiny_sft \
      --workdir=runs/tiny_grpo

What to expect: SFT loss 6.7 -> ~0.1 and token accuracy ~0.95 by step 200; GRPO then starts
near format_rate 0.85, accuracy 0.65 (chance is below 0.5), think_length ~37 tokens, and the
reward/total moves little in 60 steps (6.4 -> 6.6 in our run): the pipeline, not a result.
Re-running a command resumes it from its last checkpoint.
"""

import pathlib
import sys

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])  # the repo root, for `configs.common`
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
from cesar_jax import config as config_lib  # noqa: E402
from configs import common  # noqa: E402


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, job="grpo", steps=60, sft_steps=200, init_from="",
                             reward="cesar", examples=512)
  config = common.base(job=arg.job, steps=arg.steps, reward_preset=arg.reward)
  config.init_from = arg.init_from
  config.log_every = 10
  config.checkpoint_every = 20

  # Model section: the tiny preset, positions for 2 s of audio.
  config.model = common.model("tiny", max_source_positions=100)

  # Data section.
  config.data.num_examples = arg.examples
  config.data.question_types = ("count_beeps", "pitch_compare")
  config.data.synthetic.clip_seconds = 2.0
  config.data.synthetic.min_semitones = 5  # easy pitch comparisons
  config.data.synthetic.max_count = 3
  config.data.synthetic.trace_times = False  # shorter traces
  config.data.chunk_seconds = 2.0  # 200 frames, 50 audio tokens
  config.data.buckets = (192,)
  config.data.batch_size = 8

  # Sampling section.
  config.sampling.num_samples = 4
  config.sampling.max_new_tokens = 64  # traces here: 30-50 tokens
  config.rewards.overthinking.max_think_tokens = 64  # L_max_output scaled to these traces

  # Optimizer section.
  config.optim.lr = 3e-4  # a tiny model: far above the 7B recipes' 1e-5
  config.optim.warmup_steps = min(5, arg.steps // 2)

  # SFT section.
  config.sft.steps = arg.sft_steps
  config.sft.lr = 3e-3
  config.sft.warmup_steps = min(10, arg.sft_steps // 2)
  config.sft.batch_size = 16
  config.sft.max_target_tokens = 64

  config.lock()
  return config
