r"""configs/smoke.py with traces that hallucinate, for the `mpar2` perception-reward run.

Task: count the beeps (1-3) in a 1.5 s clip. SFT (150 steps) learns from traces that all
claim one event that is not in the clip (`hallucination_rate=1`: a fabricated sound in a
silence, or a real beep claimed as another kind; `synth_traces.py`). GRPO with the `mpar2`
preset (accuracy + format + perception + answer consistency) then thinks freely (no think
budget, up to 80 new tokens, G = 8). A claimed noise burst, tone or chirp in a clip of beeps
is false whatever the audio, so the policy can learn to stop claiming it without learning to
hear: the perception reward rises (tests/rl/test_perception_reward_run.py).

Measured (2 cores, 40 steps, mean of the first and the last fifth): reward/perception 0.96 ->
1.26 with `mpar2` (accuracy 0.32 -> 0.32); the control, the same run with `reward=outcome`
(perception logged with weight 0), 0.92 -> 1.12 (accuracy 0.30 -> 0.26): part of the rise
comes from accuracy and format alone (a fabricated beep changes the count), rewarding
perception adds about 0.1 here (one seed each).

  python -m cesar_jax.main --config=tests/rl/perception_smoke_config.py:job=sft \
      --workdir=/tmp/p_sft
  python -m cesar_jax.main --config=tests/rl/perception_smoke_config.py:init_from=/tmp/p_sft \
      --workdir=/tmp/p_grpo
"""

import pathlib
import sys

_ROOT = str(pathlib.Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
from cesar_jax import config as config_lib  # noqa: E402
from configs import smoke  # noqa: E402


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, job="grpo", steps=40, sft_steps=150, init_from="",
                             reward="mpar2", hallucination_rate=1.0)
  config = smoke.get_config(f"job={arg.job},steps={arg.steps},sft_steps={arg.sft_steps},"
                            f"init_from={arg.init_from},reward={arg.reward}")
  config.unlock()
  if "perception" not in config.rewards.weights:
    config.rewards.weights.perception = 0.0  # logged, not rewarded (the control)
  config.data.question_types = ("count_beeps",)
  config.data.synthetic.max_count = 3
  config.data.synthetic.hallucination_rate = arg.hallucination_rate
  config.sft.max_target_tokens = 80  # hallucinated traces: up to ~70 tokens
  config.sampling.think_budget = -1  # think freely
  config.sampling.max_new_tokens = 80
  config.sampling.num_samples = 8
  config.checkpoint_every = 100
  config.lock()
  return config
