"""The main job (`make demo`): cold-start SFT, GRPO arms x seeds, the two-protocol sweep.

Stages, each a job of its own with its own workdir under the demo's, run in-process in order:

  WORKDIR/sft           cold-start SFT of a tiny audio LM from scratch on the synthetic traces
                        (corruptions included: hallucinated events, inconsistent answers, rambling)
  WORKDIR/ARM_sI        GRPO from the SFT checkpoint with reward preset ARM (`config.arms`,
                        e.g. outcome = the RLVR baseline, cesar) and training seed I
                        (`config.seeds` per arm; arm runs of one seed share data order and keys)
  WORKDIR/              the sweep of every model under the cap and extend protocols:
                        report.md, report.json, figures (see configs/demo.py)

Each stage resumes from its own checkpoints, so re-running `make demo` after an interruption
continues where it stopped, and a finished stage costs only its restore.

The GRPO stages build the same programs (same shapes; only the reward differs), so the demo
turns on JAX's persistent compilation cache in WORKDIR/.jax_cache (unless a cache directory
is already configured): the second and later stages load the sampler and update executables
instead of compiling them again.
"""

from __future__ import annotations

import pathlib
import time

import jax
from absl import logging
from etils import epath

from cesar_jax import config as config_lib
from cesar_jax import sft
from cesar_jax.eval import evaluate
from cesar_jax.eval.report import format_ci
from cesar_jax.rl import trainer


def grpo_stages(config) -> dict[str, list[str]]:
  """{arm: [stage names, one per seed]} in the config's order."""
  return {arm: [f"{arm}_s{i}" for i in range(int(config.seeds))] for arm in config.arms}


def _compilation_cache(root: pathlib.Path) -> None:
  if jax.config.jax_compilation_cache_dir:
    return
  jax.config.update("jax_compilation_cache_dir", str(root / ".jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def run(config, workdir: str) -> None:
  root = epath.Path(workdir)
  _compilation_cache(root)
  timings = {}

  def stage(name, fn, stage_config, stage_dir):
    t0 = time.perf_counter()
    logging.info("demo stage %s -> %s", name, stage_dir)
    print(f"\n=== demo: {name} ({stage_dir}) ===", flush=True)
    if jax.process_index() == 0:  # written once; every process runs the stage
      config_lib.save(stage_config, stage_dir)
    fn(stage_config, str(stage_dir))
    timings[name] = time.perf_counter() - t0

  stage("sft", sft.run, config.stages.sft, root / "sft")
  arms = grpo_stages(config)
  for names in arms.values():
    for name in names:
      grpo_config = config.stages[name]
      with grpo_config.unlocked():
        grpo_config.init_from = str(root / "sft")
      stage(f"grpo {name}", trainer.run, grpo_config, root / name)
  checkpoints = {"sft": str(root / "sft"),
                 **{n: str(root / n) for names in arms.values() for n in names}}
  t0 = time.perf_counter()
  print(f"\n=== demo: sweep of {', '.join(checkpoints)} (cap and extend) ===", flush=True)
  result = evaluate.evaluate(checkpoints, config.stages.eval, workdir, arms=arms)
  timings["eval"] = time.perf_counter() - t0
  print("\nstage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
  fixed, chance = result.get("fixed_budget"), result["chance_accuracy"]
  print(f"chance accuracy {chance:.1f}%; fixed budget {fixed}; natural think tokens "
        + ", ".join(f"{n} {v:.1f}" for n, v in result.get("natural_think_tokens", {}).items()))
  for protocol, section in result.get("protocols", {}).items():
    print(f"\n[{protocol}]")
    for name, m in section["models"].items():
      acc = m["fixed_accuracy"]
      print(f"{name:12s} P({fixed}) {acc:.1f} {format_ci(m['fixed_ci'], 1)} = {acc / chance:.2f}x chance; "
            f"slope {m['slope_per_token']:+.4f} pts/token {format_ci(m['slope_ci'], 4, True)}; sweet spot "
            f"{m['sweet_spot']} {format_ci(m['sweet_spot_ci'], 0)}")
  for name, per in result.get("comparisons", {}).items():
    for protocol, c in per.items():
      print(f"{name} [{protocol}]: slope {c['slope_diff']:+.4f} {format_ci(c['slope_diff_ci'], 4, True)}, "
            f"P({fixed}) {c['accuracy_diff']:+.1f} {format_ci(c['accuracy_diff_ci'], 1, True)}")
  for arm, s in result.get("seeds", {}).items():
    if (d := s.get("perception")):
      print(f"perception {arm}: precision {d['mean_precision']:.1f} {format_ci(d['mean_ci'], 1)}, decay "
            f"{d['slope_per_100_tokens']:+.1f} pts/100 tokens {format_ci(d['slope_ci'], 1, True)}")
  for name, d in (result.get("perception_comparisons") or {}).items():
    print(f"{name} [perception]: decay {d['decay_diff']:+.1f} {format_ci(d['decay_diff_ci'], 1, True)}, precision "
          f"{d['precision_diff']:+.1f} {format_ci(d['precision_diff_ci'], 1, True)}")
  for arm, comps in result.get("training", {}).items():
    total = comps.get("total")
    if total:
      print(f"training {arm}: reward/total {total['first']:.3f} -> {total['last']:.3f} "
            f"(change {total['diff']:+.3f}, 95% CI {format_ci(total['ci'], 3, True)})")
  print(f"\nreport: {root / 'report.md'}")
