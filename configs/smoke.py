r"""Smoke test of the whole pipeline on a CPU: SFT then GRPO with a 0.19M-parameter model.

What it is for: the end-to-end and robustness tests (tests/rl/test_resume.py: the reward rises;
resume after SIGKILL; SIGTERM; non-finite steps). The model is a tiny Qwen2-Audio (width 64,
one layer per side, 16 mels); the data 32 synthetic "pitch_compare" clips of 1.5 s (1 s
analysed: 25 audio tokens); 4 prompts a step. SFT teaches the trace format; GRPO (G = 4, outcome
rewards: accuracy + format) then asks for the answer directly: the think budget is 0, so the
sampler forces `<answer>` and the policy must close it and stop (8 new tokens at most), which
it learns within a few steps (format_rate ~0.5 -> ~1).

Run (2 CPU cores; ~40 s each, most of it compiling):

  python -m cesar_jax.main --config=configs/smoke.py:job=sft --workdir=/tmp/smoke_sft
  python -m cesar_jax.main --config=configs/smoke.py:init_from=/tmp/smoke_sft \
      --workdir=/tmp/smoke_grpo

`arch=omni` runs the same on the tiny Qwen2.5-Omni thinker (preset `tiny_omni`, cut down the
same way; chunks of 2 * 50 frames = 1 s, so one chunk per clip here):

  python -m cesar_jax.main --config=configs/smoke.py:job=sft,arch=omni --workdir=/tmp/omni_sft

Expect metrics.jsonl with one line per step; SFT loss from ~6.7 to ~0.3; GRPO format_rate
near 1 after a few steps and `optim/skipped_steps` 0. Re-running a command resumes it. From a
random init (no `init_from`) GRPO runs but every reward is 0: nothing to learn.
"""

import pathlib
import sys

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])  # the repo root, for `configs.common`
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
from cesar_jax import config as config_lib  # noqa: E402
from configs import common  # noqa: E402


# arch arg -> model preset: Qwen2-Audio (default) or the Qwen2.5-Omni thinker.
_PRESETS = {"qwen2_audio": "tiny", "omni": "tiny_omni"}


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, job="grpo", steps=12, sft_steps=40, init_from="",
                             arch="qwen2_audio", reward="outcome")  # reward: any preset
  if arg.arch not in _PRESETS:
    raise ValueError(f"configs/smoke.py: arch={arg.arch!r}; choose from {sorted(_PRESETS)}")
  config = common.base(job=arg.job, steps=arg.steps, reward_preset=arg.reward)
  config.init_from = arg.init_from
  config.log_every = 2
  config.checkpoint_every = 2

  # Model section: the tiny preset (or tiny_omni) cut down (width 64, one layer each side,
  # 16 mels).
  config.model = common.model(_PRESETS[arg.arch], num_hidden_layers=1, encoder_layers=1,
                              num_mel_bins=16, max_source_positions=50)  # 1 s = 100 frames

  # Data section.
  config.data.num_examples = 32
  config.data.question_types = ("pitch_compare",)
  config.data.synthetic.clip_seconds = 1.5
  config.data.synthetic.min_semitones = 5
  config.data.synthetic.trace_times = False
  config.data.chunk_seconds = 1.0  # 25 audio tokens
  config.data.n_mels = 16
  config.data.buckets = (128,)
  config.data.batch_size = 4

  # Sampling section: answer directly (the sampler forces `<answer>` first).
  config.sampling.num_samples = 4
  config.sampling.think_budget = 0
  config.sampling.max_new_tokens = 8

  # Optimizer section.
  config.optim.lr = 1e-3  # a tiny model
  config.optim.warmup_steps = 0

  # SFT section.
  config.sft.steps = arg.sft_steps
  config.sft.lr = 1e-2
  config.sft.batch_size = 8
  config.sft.max_target_tokens = 56  # pitch_compare traces here: 50 tokens + <|im_end|>

  config.lock()
  return config
