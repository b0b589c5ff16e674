r"""The main job (`make demo`): does process reward change how accuracy scales with thinking?

From nothing, on the synthetic audio-reasoning set (count the beeps in a 2 s clip, 1 to 5
beeps, 4 options, chance 25%), on 2 CPU cores: a tiny Qwen2-Audio-architecture model is
trained from scratch with cold-start SFT on reasoning traces (corruptions included); then GRPO
runs from that checkpoint once per arm (reward preset) and training seed, the arms paired by
seed (same data order and sampling keys); then every model is swept over think budgets on
held-out items under two protocols in the same sampler calls:

* cap (CESAR's L_max, the sampler's "forced"): `</think>` is forced at the budget;
* extend (s1's budget forcing, arXiv 2501.19393): the cap, and an early `</think>` is replaced
  by " Wait, let me listen again." (the relisten sentence of the SFT traces) until the
  budget, so a model thinks exactly L tokens, longer than it would on its own.

Output: WORKDIR/report.md (+ report.json, PNGs): per protocol and model the curve with
intervals, the natural think length, the sweet spot with its interval, "x chance" at the
budget fixed below; per arm the seeds' slopes and the pooled curve; CESAR minus outcome
(slope, accuracy at the fixed budget) with intervals; whether GRPO moved each reward component.

  make demo                                   # = the command below
  python -m cesar_jax.main --config=configs/demo.py --workdir=runs/demo
  python -m cesar_jax.main --config=configs/demo.py:scale=4,seeds=3 --workdir=runs/demo_x4

GRPO alone from a saved SFT model (e.g. to try settings): copy a finished WORKDIR/sft into a
new workdir and run the demo there; finished stages are restored, not retrained.

Time at scale=1: 6 min 38 s wall on the project's 2 idle cores (`make demo`, 2026-12-01 19:35
UTC, layers under a scan; docs/results.md has the stages and the results); 9 min 56 s on the same
idle host in a slower spell (`time make demo`, 22:46 UTC, load 0.9-1.7, report.json
byte-identical); 8 min 0 s before the scan with a short test run beside it. scale=2, three
arms x 3 seeds, at 100 steps per unit of scale: 39 min at load 6-8 (`configs/demo.py:scale=2,seeds=3,arms=outcome,cesar,mpar2`).

Args: `scale=N` multiplies SFT/GRPO steps, training examples and test items; `seeds=N` GRPO
seeds per arm; `arms=outcome,cesar` (any presets `cesar_jax.rewards.PRESETS` knows; `+` also
separates them); `arch=qwen2_audio|omni` (omni: the `tiny_omni` model preset); `seed=S` the
base seed; `guard=M` the process-reward guard (below); `fast=1` a seconds-long variant for
tests (few steps, items, budgets).

Hyperparameters and why (docs/results.md has what the final run did):
* SFT: 300 steps x 16 traces, lr 3e-3 (the tiny model needs ~300 steps to count to 5).
* GRPO: 150 steps x 8 prompts x G = 8 samples (1,200 prompts, 9,600 completions per run),
  lr 5e-4 (Adam, 3 warmup steps, cosine to 0), one update per batch (mu 1), no KL (beta 0, as
  R1-AQA/CESAR's TRL defaults), clip 0.2, temperature 1, max 64 new tokens, no think budget
  during training (the rewarded completions are the policy's own: budget_forced_frac 0).
  Chosen from dev trials, each GRPO alone from the demo's own SFT checkpoint (300 steps, seed
  0), outcome arm, seed 0, 40 steps unless said; change of reward/total from the first to the
  last fifth of training [95% bootstrap CI over steps]:
    lr 1e-3 (the previous default)        -0.572 [-0.668, -0.475]  accuracy 0.79 -> 0.25
    lr 1e-3, advantage none (Dr. GRPO)     -0.043 [-0.135, +0.045]
    lr 1e-3, loss aggregation dr_grpo      -0.002 [-0.086, +0.068]
    lr 1e-3, KL beta 0.04                  -0.008 [-0.096, +0.088]
    lr 5e-4                                -0.029 [-0.094, +0.035]  (earlier session)
    lr 3e-4                                +0.029 [-0.045, +0.094]
    lr 3e-4, mu 2 / mu 4                   +0.000 [-0.107, +0.090] / -0.045 [-0.117, +0.018]
    lr 3e-4, 16 prompts per step           +0.028 [-0.017, +0.070]
    lr 1e-4                                -0.018 [-0.074, +0.033]  (earlier session)
    lr 5e-4, 80 steps: outcome s0 +0.071 [+0.017, +0.126], s1 +0.100 [+0.040, +0.167];
                       cesar s0 +0.139 [-0.032, +0.313], s1 +0.501 [+0.137, +0.862]
    lr 5e-4, 100 steps: cesar s0 +0.646 [+0.355, +0.973] (accuracy 0.74 -> 0.85)
    After the CPU `Dense` change (same forward values, another float summation order in the
    backward, so other trajectories: the SFT model itself differs in its last digits), both
    seeds, reward/total change, arm [95% CI] (seed 0 / seed 1 on their own):
      lr 5e-4, 100 steps: outcome +0.050 [-0.012, +0.111] (-0.037 [-0.119, +0.058] / +0.137
                          [+0.054, +0.223]); cesar +0.431 [+0.201, +0.683]: the outcome arm
                          no longer moves measurably, its seed 0 not at all
      lr 5e-4, 150 steps: outcome +0.228 [+0.175, +0.282] (+0.118 [+0.042, +0.185] / +0.339
                          [+0.249, +0.421]); cesar +0.898 [+0.689, +1.107] (+1.194 / +0.601):
                          every arm and seed moves; the default
  Why: at lr 1e-3 the policy collapses (on 5-beep clips it starts hearing 6-7 beeps; training
  accuracy 0.8 -> 0.02 in 4 steps); at lr <= 5e-4 40 steps are too few to move it beyond the
  step-to-step noise of the batch means (the fifths are 8 steps); 100 steps at 5e-4 moved it
  up before the Dense change but only barely after it, 150 do (fifths of 30 steps): one
  arm's rise at 100 steps hung on float rounding. The signal is there: over these trials 15-25% of groups
  are all correct, 0.3-3% all wrong, 12-24% have zero advantage (all rewards equal); within
  groups the outcome reward's variance (0.30-0.39) is accuracy 0.12-0.15 and format 0.07-0.10
  (the rest their covariance), CESAR's (~6.3) mostly accuracy (25 x 0.12) and keywords (0.3).
  No bug found on the way: the update's forward equals the sampler's (logp_gap/mean 2.5e-7),
  training rollouts are never capped or extended, mu 1 makes the ratio exactly 1.
* Diagnostics logged at weight 0 in every arm: `think_concepts` (distinct concepts in the
  think part) and `keyword_density` (keyword phrases per think token), for the reward's
  optimum (issue 15 item 5). `guard=M` sets `rewards.guard.min_think_tokens` (no process
  reward for a think part under M tokens; 0 = off, the paper's formula).
* Sweep (max new tokens: the largest budget + 64, room for an answer after forced thinking):
  budgets 0..128 around the SFT model's natural think length (~34 tokens: below it and
  up to ~4x beyond), K = 4 samples per (item, budget, protocol), 4 unconstrained samples per
  item for the natural length, temperature 1, 48 test items; the fixed budget 64 (about twice
  the natural length, named here before any run) for "x chance" and the arm comparison.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repo root
import ml_collections  # noqa: E402

from cesar_jax import config as config_lib  # noqa: E402
from cesar_jax import rewards  # noqa: E402
from cesar_jax.models import config as model_config  # noqa: E402
from configs import common, eval_scaling, synthetic_tiny  # noqa: E402

ARCH_PRESETS = {"qwen2_audio": "tiny", "omni": "tiny_omni"}
BUDGETS = (0, 16, 32, 48, 64, 96, 128)
FIXED_BUDGET = 64
CONTINUATION = " Wait, let me listen again."
GRPO_STEPS = 150  # per unit of scale
GRPO_LR = 5e-4
DIAGNOSTICS = ("think_concepts", "keyword_density")


def _join_lists(arg: str | None) -> str | None:
  """`arms=outcome,cesar,scale=2` -> `arms=outcome+cesar,scale=2` (a bare word after a list
  value belongs to it)."""
  if not arg:
    return arg
  parts: list[str] = []
  for part in (p.strip() for p in arg.split(",")):
    if part and "=" not in part and parts:
      parts[-1] += "+" + part
    elif part:
      parts.append(part)
  return ",".join(parts)


def get_config(arg=None):
  arg = config_lib.parse_arg(_join_lists(arg), scale=1, seed=0, seeds=2, arms="outcome+cesar",
                             arch="qwen2_audio", fast=0, guard=0)
  s, fast = arg.scale, bool(arg.fast)
  arms = tuple(a for a in str(arg.arms).split("+") if a)
  unknown = [a for a in arms if a not in rewards.PRESETS]
  if unknown or not arms or len(set(arms)) != len(arms):
    raise ValueError(f"demo arms={arg.arms!r}: unknown or repeated reward presets {unknown}; "
                     f"known: {sorted(rewards.PRESETS)}")
  if arg.arch not in ARCH_PRESETS:
    raise ValueError(f"demo arch={arg.arch!r}; choose from {sorted(ARCH_PRESETS)}")
  if ARCH_PRESETS[arg.arch] not in model_config.PRESETS:
    raise ValueError(f"demo arch={arg.arch!r} needs the model preset "
                     f"{ARCH_PRESETS[arg.arch]!r}, which cesar_jax.models.config does not have "
                     f"(known: {sorted(model_config.PRESETS)})")
  if s < 1 or arg.seeds < 1:
    raise ValueError(f"demo scale and seeds must be >= 1, got scale={s}, seeds={arg.seeds}")
  if arg.guard < 0:
    raise ValueError(f"demo guard={arg.guard}: the minimum think length must be >= 0 (0 = off)")
  config = ml_collections.ConfigDict()
  config.job = "demo"
  config.seed = arg.seed
  config.arms = arms
  config.seeds = arg.seeds
  config.arch = arg.arch
  config.stages = {}

  sft_steps, grpo_steps = (12, 6) if fast else (300 * s, GRPO_STEPS * s)
  examples = 64 if fast else 512 * s
  # SFT stage: the tiny model from scratch on traces.
  config.stages.sft = synthetic_tiny.get_config(
      f"job=sft,sft_steps={sft_steps},examples={examples}")

  # GRPO stages: one per arm and seed, identical but for the reward preset (and the seed).
  for arm in arms:
    for i in range(arg.seeds):
      stage = synthetic_tiny.get_config(f"job=grpo,steps={grpo_steps},reward={arm},"
                                        f"examples={examples}")
      with stage.unlocked():
        stage.seed = arg.seed + i
        stage.data.seed = arg.seed + i  # the seed's own prompt order, shared by the arms
        stage.log_every = 10
        stage.checkpoint_every = grpo_steps  # only the final one: saves are not free
        stage.sampling.num_samples = 8
        stage.optim.lr = GRPO_LR
        stage.optim.warmup_steps = min(3, grpo_steps // 2)
        # Diagnostics of the reward's optimum (issue 15 item 5), weight 0: logged per step as
        # reward/think_concepts and reward/keyword_density, never rewarded (totals unchanged).
        for name in DIAGNOSTICS:
          stage.rewards.weights[name] = 0.0
        stage.rewards.guard.min_think_tokens = int(arg.guard)
      config.stages[grpo_stage(arm, i)] = stage

  # Data section (every training stage): "count the beeps", 1 to 5 of them, so 4 options and
  # chance 25%. The tiny model learns it from scratch in 300 SFT steps (it counts in its trace).
  for name, stage in config.stages.items():
    with stage.unlocked():
      stage.data.question_types = ("count_beeps",)
      stage.data.synthetic.max_count = 5
      stage.model = common.model(ARCH_PRESETS[arg.arch], max_source_positions=100)
      if name == "sft":
        stage.seed = arg.seed

  # Eval stage: both protocols, K samples, natural lengths, on held-out items of the same kind.
  items = 8 if fast else 48 * s
  config.stages.eval = eval_scaling.get_config(f"num_items={items},samples={2 if fast else 4},"
                                               "mode=both")
  train_data = config.stages.sft.data
  with config.stages.eval.unlocked():
    for key in ("question_types", "tasks", "chunk_seconds", "n_mels"):
      config.stages.eval.data[key] = train_data[key]
    config.stages.eval.data.synthetic = train_data.synthetic
    config.stages.eval.data.buckets = train_data.buckets
    config.stages.eval.mesh = config.stages.sft.mesh
    config.stages.eval.seed = arg.seed
    e = config.stages.eval.eval
    e.budgets = (0, 8, 32) if fast else BUDGETS
    e.fixed_budget = 8 if fast else FIXED_BUDGET
    e.natural_samples = 2 if fast else 4
    e.continuation = CONTINUATION
    e.max_new_tokens = max(e.budgets) + 64  # the largest budget, the tags, room for the answer
    e.items_per_call = 8 if fast else 16
  config.lock()
  return config


def grpo_stage(arm: str, seed_index: int) -> str:
  """The stage (and model, and workdir) name of one GRPO run."""
  return f"{arm}_s{seed_index}"
