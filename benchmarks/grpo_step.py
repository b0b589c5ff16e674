"""One GRPO step, side by side: cesar_jax vs TRL's GRPOTrainer vs Tunix's GRPOLearner (CPU).

The same work for all three: a Qwen2 decoder of hidden 256, ffn 1024, 4 layers, 4 query / 2
kv heads (random weights, N(0, 0.02)); 2 prompts a step, G = 4 samples each at temperature 1,
64 new tokens, KL beta 0.04 (a reference forward), one optimizer update per batch. cesar_jax
runs its real GRPO step (`rl.trainer.GrpoTrainer.step`: the synthetic "count the beeps" items,
a 2 s clip = 50 audio tokens through the audio encoder, CESAR's rewards); TRL and Tunix get
text prompts of the same total token count as ours (audio tokens included) and a Python
reward. Seconds per step are the median over the steps after `--warmup`. The three take
turns `--rounds` times (ours, TRL, Tunix, ours, ...): each row is the median over its rounds,
the ratios are of those medians, and each round's ratio is printed too (this host's speed
drifts by tens of percent over minutes; taking turns puts each implementation in each spell).
Every round of every implementation runs in a fresh interpreter.
Each row also gives its split between sampling and update (TRL: the time inside its
generation-and-scoring call; Tunix: its rollout vs its train step, from its own timers where
it has them, else ours).

Our layers run with `--remat dots` (models/remat.py: keep the matmul outputs, recompute the
norms, activations and attention in the backward pass); the values and gradients are those of
`none`. On XLA:CPU it is the faster policy here: a scanned layer's saved intermediates live in
stacked [layers, ...] buffers that XLA zero-fills, and copies, before the forward loop writes
them, which costs more than recomputing the elementwise work (the update in one process,
alternating, 2026-12-01: none 174-236 ms, dots 155-171, full 158-185). `--remat none` measures
the model config's default.

  make bench                                      # sets up .bench/{trl,tunix} and runs this
  python benchmarks/grpo_step.py --json /tmp/grpo_step.json --steps 8
  python benchmarks/grpo_step.py --only ours      # ours alone (no peers needed)

The peers run in their own virtualenvs (`--trl_python`, `--tunix_python`; `make bench` makes
them): TRL needs torch, Tunix pins its own jax and flax. A peer whose python is missing is
reported as skipped, not silently left out.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PEERS = pathlib.Path(__file__).resolve().parent / "peers"

DIMS = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2)
WORK = dict(prompts=2, num_samples=4, new_tokens=64, beta=0.04, temperature=1.0)


def ours(steps: int, warmup: int, workdir: str, remat: str) -> dict:
  """cesar_jax's real GRPO step on the work above; per-phase times from its own timers."""
  import jax  # pylint: disable=g-import-not-at-top
  from configs import synthetic_tiny  # pylint: disable=g-import-not-at-top
  from cesar_jax.rl import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  config = synthetic_tiny.get_config(f"steps={steps + warmup}")
  with config.unlocked():
    config.model.update(DIMS)
    config.data.question_types = ("count_beeps",)
    config.data.batch_size = WORK["prompts"]
    config.data.buckets = tuple(range(16, 257, 16))  # prompts padded to the next 16 tokens
    config.sampling.num_samples = WORK["num_samples"]
    config.sampling.max_new_tokens = WORK["new_tokens"]
    config.sampling.temperature = WORK["temperature"]
    config.grpo.beta = WORK["beta"]
    config.grpo.completion_buckets = 4
    config.mesh.shape = (1, 1, 1)
    config.model.remat = remat
  trainer = trainer_lib.GrpoTrainer(config, workdir)
  state, key = trainer.state, jax.random.key(0)
  rows, prompt_tokens = [], []
  for step in range(steps + warmup):
    t0 = time.perf_counter()
    state, metrics, _ = trainer.step(state, step, jax.random.fold_in(key, step))
    jax.block_until_ready(state)
    wall = time.perf_counter() - t0
    if step >= warmup:
      rows.append({"s": wall, "sampling": float(metrics["time/sampling"]),
                   "update": float(metrics["time/update"])})
  batch = next(trainer.iterator)
  prompt_tokens = float(batch["prompt_mask"].sum(1).mean())
  params = sum(x.size for x in jax.tree.leaves(state["params"]))
  return {"impl": "cesar_jax", "s_per_step": statistics.median(r["s"] for r in rows),
          "sampling_s": statistics.median(r["sampling"] for r in rows),
          "update_s": statistics.median(r["update"] for r in rows), "params": int(params),
          "prompt_tokens": prompt_tokens, "remat": remat,
          "compiles": {"update": trainer.update.compile_count,
                       "sampler": trainer.sampler.compile_count}}


def run_json(name: str, argv: list[str], env: dict) -> dict:
  """Runs `argv` in its own interpreter and returns its last stdout line, JSON."""
  proc = subprocess.run(argv, env=env, text=True, capture_output=True, timeout=3600)
  if proc.returncode:
    raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def ours_apart(steps: int, warmup: int, workdir: str, remat: str) -> dict:
  """`ours` in a fresh interpreter, as each peer runs: every round starts from a new process
  (in one process the rounds slowed down one after another: 0.31 -> 0.42 -> 0.46 s/step)."""
  child = json.dumps(dict(steps=steps, warmup=warmup, workdir=workdir, remat=remat))
  return run_json("cesar_jax", [sys.executable, __file__, "--_ours", child],
                  dict(os.environ, HF_HUB_OFFLINE="1"))


def peer(name: str, python: str, work: dict) -> dict:
  """Runs benchmarks/peers/<name>_grpo.py in its own interpreter; its last stdout line is JSON."""
  if not python or not pathlib.Path(python).exists():
    return {"impl": name, "skipped": f"no interpreter at {python!r} (make bench sets it up)"}
  env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(REPO))
  return run_json(name, [python, str(PEERS / f"{name}_grpo.py"), json.dumps(work)], env)


def combine(rounds: list[dict]) -> dict:
  """One implementation's row from its rounds: the median of each time, the rest as measured
  in the first round, each round's s/step kept."""
  if "skipped" in rounds[0]:
    return rounds[0]
  row = dict(rounds[0])
  for key in ("s_per_step", "sampling_s", "update_s"):
    row[key] = statistics.median(r[key] for r in rounds)
  row["s_per_step_by_round"] = [r["s_per_step"] for r in rounds]
  return row


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--steps", type=int, default=8, help="measured steps (after warm-up)")
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--only", choices=("ours", "trl", "tunix"), action="append")
  ap.add_argument("--trl_python", default=str(REPO / ".bench" / "trl" / "bin" / "python"))
  ap.add_argument("--tunix_python", default=str(REPO / ".bench" / "tunix" / "bin" / "python"))
  ap.add_argument("--remat", default="dots", choices=("none", "dots", "full"),
                  help="our layers' remat policy (models/remat.py); the module docstring says "
                       "why dots is the default here")
  ap.add_argument("--rounds", type=int, default=3,
                  help="times each implementation runs, taking turns; rows are medians over them")
  ap.add_argument("--json", default="")
  ap.add_argument("--_ours", default="", help=argparse.SUPPRESS)  # one round, in a child
  args = ap.parse_args()
  if args._ours:  # pylint: disable=protected-access
    print(json.dumps(ours(**json.loads(args._ours))))  # pylint: disable=protected-access
    return
  if args.rounds < 1:
    ap.error(f"--rounds={args.rounds}: need at least 1")
  which = args.only or ["ours", "trl", "tunix"]
  runs: dict[str, list[dict]] = {}
  with tempfile.TemporaryDirectory() as tmp:
    for k in range(args.rounds):  # the three take turns: a slow spell of the host hits all
      if "ours" in which:
        workdir = os.path.join(tmp, f"round_{k}")
        runs.setdefault("cesar_jax", []).append(
            ours_apart(args.steps, args.warmup, workdir, args.remat))
      prompt_tokens = runs["cesar_jax"][0]["prompt_tokens"] if "cesar_jax" in runs else 110
      work = dict(WORK, **DIMS, steps=args.steps, warmup=args.warmup,
                  prompt_tokens=int(round(prompt_tokens)))
      for name, python in (("trl", args.trl_python), ("tunix", args.tunix_python)):
        if name in which:
          runs.setdefault(name, []).append(peer(name, python, work))
  rows = [combine(rounds) for rounds in runs.values()]
  load = os.getloadavg()
  print(f"GRPO step, {WORK['prompts']} prompts x G={WORK['num_samples']}, "
        f"{WORK['new_tokens']} new tokens, beta {WORK['beta']}; load average "
        f"{load[0]:.1f} / {load[1]:.1f} (1 / 5 min)")
  print(f"{'impl':10s} {'s/step':>8s} {'sampling':>9s} {'update':>8s} {'params':>10s}")
  for r in rows:
    if "skipped" in r:
      print(f"{r['impl']:10s} skipped: {r['skipped']}")
      continue
    print(f"{r['impl']:10s} {r['s_per_step']:8.3f} {r['sampling_s']:9.3f} {r['update_s']:8.3f} "
          f"{r['params']:10d}")
  done = {r["impl"]: r for r in rows if "skipped" not in r}
  out = {"rows": rows, "load_average": load, "rounds": args.rounds}
  for peer_name, impl in (("trl", "trl"), ("tunix", "tunix")):
    if "cesar_jax" in done and impl in done:
      ours_s, theirs_s = done["cesar_jax"]["s_per_step_by_round"], done[impl]["s_per_step_by_round"]
      out[f"ratio_vs_{peer_name}"] = done[impl]["s_per_step"] / done["cesar_jax"]["s_per_step"]
      out[f"ratios_vs_{peer_name}_by_round"] = [t / o for o, t in zip(ours_s, theirs_s)]
      print(f"cesar_jax is {out[f'ratio_vs_{peer_name}']:.2f}x {impl} (medians over rounds; by "
            f"round: {' / '.join(f'{x:.2f}x' for x in out[f'ratios_vs_{peer_name}_by_round'])})")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
  main()
