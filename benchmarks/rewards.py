"""Reward throughput: the jitted token-id rewards vs the plain-Python reference, side by side.

Both score the same `--completions` completions of exactly `--tokens` tokens (default 4,096 x
256) with the CESAR preset: most are well formed (a think part cut to fit, then a lettered or
textual answer, right or wrong), a quarter are truncated (the think part never closes). Ours:
`rewards.build(...)` applied to the token ids under jit (what the trainer calls), best of
`--repeats` calls, compile time reported apart; also `rewards.score_texts` end to end (it
tokenises the texts first). Reference: `rewards.reference.score_texts` on the decoded texts,
one call. Every component of the two must agree: `max_abs_diff` is over all of them.

  python benchmarks/rewards.py
  python benchmarks/rewards.py --completions 512 --json /tmp/rewards.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from cesar_jax import rewards  # noqa: E402
from cesar_jax import tokenizers as tok_lib  # noqa: E402
from cesar_jax.rewards import testing  # noqa: E402


def make_batch(tokenizer: tok_lib.Tokenizer, n: int, length: int, seed: int):
  """n completions of exactly `length` tokens (ids), their texts and examples."""
  rng = np.random.default_rng(seed)
  ids, examples = [], []
  while len(ids) < n:
    ex = testing.example(rng, len(ids))
    kind = "truncated" if len(ids) % 4 == 3 else ("good" if rng.random() < 0.7 else "wrong")
    c = testing.fixed_length_completion(rng, ex, tokenizer, length, kind)
    if c is not None:
      ids.append(c)
      examples.append(ex)
  ids = np.array(ids, np.int32)
  return ids, tokenizer.decode_batch(ids.tolist()), examples


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--completions", type=int, default=4096)
  parser.add_argument("--tokens", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", default=None, help="write the results here")
  args = parser.parse_args()

  tokenizer = tok_lib.Tokenizer.builtin()
  config = rewards.default_config("cesar")
  ids, texts, examples = make_batch(tokenizer, args.completions, args.tokens, args.seed)
  lengths = np.full([len(ids)], args.tokens, np.int32)

  t = time.perf_counter()
  reward_fn = rewards.build(config, tokenizer)
  build_s = time.perf_counter() - t
  t = time.perf_counter()
  arrays = rewards.encode_examples(examples, tokenizer, config)
  encode_s = time.perf_counter() - t
  ids_d, lengths_d = jax.device_put(ids), jax.device_put(lengths)
  arrays_d = jax.device_put(arrays)
  t = time.perf_counter()
  ours = jax.block_until_ready(rewards.apply(reward_fn, ids_d, lengths_d, arrays_d))
  first_s = time.perf_counter() - t
  times = []
  for _ in range(args.repeats):
    t = time.perf_counter()
    ours = jax.block_until_ready(rewards.apply(reward_fn, ids_d, lengths_d, arrays_d))
    times.append(time.perf_counter() - t)
  ours_s = min(times)
  ours = {k: np.asarray(v) for k, v in ours.items()}

  t = time.perf_counter()
  rewards.score_texts(texts, examples, config, tokenizer)  # Compiles its padded shape.
  t = time.perf_counter()
  end_to_end = rewards.score_texts(texts, examples, config, tokenizer)
  end_to_end_s = time.perf_counter() - t

  t = time.perf_counter()
  ref = rewards.reference.score_texts(texts, examples, config, tokenizer)
  ref_s = time.perf_counter() - t

  diff = max(float(np.max(np.abs(ours[k] - ref[k]))) for k in ref)
  diff = max(diff, max(float(np.max(np.abs(end_to_end[k] - ref[k]))) for k in ref))
  n = len(ids)
  result = {
      "completions": n,
      "tokens": args.tokens,
      "ours_per_s": n / ours_s,
      "reference_per_s": n / ref_s,
      "ratio": ref_s / ours_s,
      "max_abs_diff": diff,
      "ours_s": ours_s,
      "ours_compile_s": first_s - ours_s,
      "ours_end_to_end_per_s": n / end_to_end_s,
      "reference_s": ref_s,
      "build_tables_s": build_s,
      "encode_examples_s": encode_s,
      "device": str(jax.devices()[0]),
      "mean_rewards": {k: float(v.mean()) for k, v in ref.items()},
  }
  print(f"Rewards (CESAR preset), {n} completions x {args.tokens} tokens, {jax.devices()[0]}")
  print(f"| {'implementation':42s} | {'seconds':>8s} | {'completions/s':>13s} | {'vs ref':>7s} |")
  print(f"|{'-' * 44}|{'-' * 10}|{'-' * 15}|{'-' * 9}|")
  for name, secs in (("reference (plain Python, decoded text)", ref_s),
                     ("ours: jitted RewardFn on token ids", ours_s),
                     ("ours: score_texts (tokenise + jitted)", end_to_end_s)):
    print(f"| {name:42s} | {secs:8.3f} | {n / secs:13.0f} | {ref_s / secs:6.1f}x |")
  print(f"compile {first_s - ours_s:.1f} s, table build {build_s:.2f} s, encode_examples "
        f"{encode_s:.2f} s; max |ours - reference| over all components: {diff:g}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
