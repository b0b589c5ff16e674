r"""Test-time scaling evaluation: accuracy against the think budget L_max, for trained models.

Reproduces CESAR's protocol (arXiv 2510.20867, shared/REFERENCES.md): sweep the maximum think
length L_max from 0 to 250 tokens in steps of 25, accuracy P(L_max) per budget with a 95%
bootstrap interval over items, the scaling slope (accuracy points per token) with its
interval, and the sweet spot argmax P with its interval. `mode=extend` (or `mode=both`, cap
and extend in the same sampler calls) adds s1's budget forcing (arXiv 2501.19393): an early
`</think>` becomes "Wait" until the budget, so models think longer than they would. On the
synthetic set it also scores perception in each reasoning chain against the clip's
ground-truth events (MPAR^2's perception decay), without a judge.

  python -m cesar_jax.main --config=configs/eval_scaling.py \
      --config.checkpoint=runs/demo/cesar --workdir=runs/eval_cesar
  # several models on one figure:
  python -m cesar_jax.main --config=configs/eval_scaling.py \
      --config.checkpoint=outcome=runs/demo/outcome,cesar=runs/demo/cesar --workdir=runs/eval
  # MMAU test-mini with a local audio folder:
  python -m cesar_jax.main --config=configs/eval_scaling.py:data=mmau \
      --config.data.path=mmau-test-mini-v05.15.25.json --config.data.audio_dir=DIR \
      --config.checkpoint=RUN --workdir=runs/eval_mmau

Writes WORKDIR/report.md, report.json and the figures. A tiny model on 64 synthetic items and
11 budgets takes about a minute on 2 CPU cores; a 7B on MMAU's 1,000 items wants accelerators.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repo root
from cesar_jax import config as config_lib  # noqa: E402
from cesar_jax.eval import scaling  # noqa: E402
from configs import common  # noqa: E402


PROTOCOLS_OF_MODE = {"forced": ("cap",), "cap": ("cap",), "extend": ("extend",),
                     "both": ("cap", "extend"), "prompted": ("prompted",)}


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, data="synthetic", num_items=64, samples=1, mode="forced")
  if arg.mode not in PROTOCOLS_OF_MODE:
    raise ValueError(f"eval_scaling mode={arg.mode!r}; choose from {sorted(PROTOCOLS_OF_MODE)}")
  config = common.base(job="eval_scaling")
  config.checkpoint = ""  # a run workdir, or name=DIR,name=DIR

  # Data section: the items every model is evaluated on.
  config.data.name = arg.data
  config.data.split = "test"
  config.data.num_examples = arg.num_items  # synthetic: generated; benchmarks: the first N (0 = all)
  config.data.path = ""  # benchmarks: the metadata file (MMAU json / MMAR-meta.jsonl)
  config.data.audio_dir = ""  # benchmarks: the audio folder
  config.data.buckets = (256, 512, 1024, 2048)

  # Eval section.
  config.eval = dict(
      budgets=scaling.CESAR_BUDGETS,  # 0..250 step 25, CESAR's sweep
      # cap: the sampler closes <think> at L_max ("forced"); extend: s1 budget forcing (an
      # early </think> becomes `continuation`); prompted: the budget is in the prompt text.
      protocols=PROTOCOLS_OF_MODE[arg.mode],
      continuation=" Wait",  # s1's; extend mode only
      num_samples=arg.samples,  # K samples per (item, budget, protocol)
      natural_samples=0,  # > 0: unconstrained samples per item (natural think length; > 1
      #                     also Gema et al.'s natural overthinking curve)
      fixed_budget=-1,  # >= 0: report P and "x chance" at this budget (name it in advance)
      items_per_call=16,
      temperature=1.0,
      greedy=False,
      max_new_tokens=320,  # the largest budget plus room for the answer
      num_resamples=1000,  # bootstrap
  )
  config.lock()
  return config
