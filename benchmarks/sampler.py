"""Sampler throughput: cesar_jax's jitted KV-cache sampler vs transformers `generate` (torch CPU).

Both decode the same random Qwen2-Audio weights (the model preset's config, built by
transformers and loaded into cesar_jax through `checkpoints.hf`), greedily, for the same
prompts: `--batch` prompts, each one audio clip of `--clip_seconds` plus ~40 text tokens, and
exactly `--new_tokens` new tokens (no stop id can fire). Tokens per second = batch * new
tokens / wall time of one whole call (prefill included), best of `--repeats` calls; our first
call's extra time over that is reported apart as compile time.

Two modes, each `--batch` sequences: "distinct" (`--batch` different prompts, greedy) and
"groups" (batch / G prompts x G samples at temperature 1, GRPO's rollouts; we prefill each
prompt once, transformers' `num_return_sequences` repeats the prompt G times).

Differences that are part of the design, not of the measurement: transformers requires the
audio padded to the full 30 s window (3000 frames) and encodes all of it; our sampler cuts
padding frames to a frame bucket (exactly, see `sampling/batching.py`) and pads prompts to a
length bucket.

  python benchmarks/sampler.py                       # tiny and small, 32 x 128 tokens, both modes
  python benchmarks/sampler.py --configs tiny --json /tmp/sampler.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from cesar_jax.checkpoints import hf  # noqa: E402
from cesar_jax.models import audio_lm  # noqa: E402
from cesar_jax.models import config as model_config  # noqa: E402
from cesar_jax.sampling import budgets as budgets_lib  # noqa: E402
from cesar_jax.sampling import sampler as sampler_lib  # noqa: E402

TEXT_TOKENS = 40
PAD_ID = 0


def _hf_model(cfg: model_config.AudioLMConfig, directory: pathlib.Path):
  import torch  # pylint: disable=g-import-not-at-top
  from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  hf_cfg = cfg.to_hf()
  model = Qwen2AudioForConditionalGeneration(Qwen2AudioConfig(**{
      k: v for k, v in hf_cfg.items() if k not in ("architectures", "model_type")}))
  model.save_pretrained(directory)
  model = model.eval()
  model.generation_config.eos_token_id = None
  return model


def _prompts(cfg: model_config.AudioLMConfig, batch: int, clip_seconds: float, seed: int = 0):
  """Left-padded numpy prompts + 3000-frame features (the HF processor's layout)."""
  rng = np.random.default_rng(seed)
  frames = 2 * cfg.audio.max_source_positions
  valid = min(int(clip_seconds * 100), frames)
  n_audio = int(audio_lm.num_audio_tokens(np.array(valid)))
  vocab = cfg.text.vocab_size
  rows = []
  for i in range(batch):
    t = TEXT_TOKENS + int(rng.integers(-8, 9))
    text = rng.integers(1, vocab, size=t)
    text[text == cfg.audio_token_id] = 1
    rows.append(np.concatenate([text[:8], np.full(n_audio, cfg.audio_token_id), text[8:]]))
  width = max(len(r) for r in rows)
  ids = np.full((batch, width), PAD_ID, np.int64)
  mask = np.zeros((batch, width), np.int64)
  for i, r in enumerate(rows):
    ids[i, width - len(r):], mask[i, width - len(r):] = r, 1
  feats = np.full((batch, cfg.audio.num_mel_bins, frames), -0.5, np.float32)
  feats[:, :, :valid] = rng.normal(size=(batch, cfg.audio.num_mel_bins, valid))
  fmask = np.zeros((batch, frames), np.int64)
  fmask[:, :valid] = 1
  return dict(input_ids=ids, attention_mask=mask, input_features=feats,
              feature_attention_mask=fmask)


def _time(fn, repeats: int) -> tuple[float, float, object]:
  """Best wall time of `repeats` calls, the process CPU time of that call, its output."""
  best, cpu, out = float("inf"), float("inf"), None
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    out = fn()
    wall = time.perf_counter() - start
    if wall < best:
      best, cpu = wall, time.process_time() - start_cpu
  return best, cpu, out


def _row(name, mode, params_count, batch, new_tokens, ours_s, hf_s, compile_s, agreement,
         ours_cpu_s, hf_cpu_s):
  ours_tps, hf_tps = batch * new_tokens / ours_s, batch * new_tokens / hf_s
  return {
      "config": name,
      "mode": mode,
      "params": params_count,
      "batch": batch,
      "new_tokens": new_tokens,
      "ours_tokens_per_s": round(ours_tps, 1),
      "transformers_tokens_per_s": round(hf_tps, 1),
      "ratio": round(ours_tps / hf_tps, 2),
      "compile_s": round(compile_s, 2),
      "ours_call_s": round(ours_s, 3),
      "transformers_call_s": round(hf_s, 3),
      # CPU seconds of the timed call (all threads): steadier than wall time on a shared host.
      "ours_cpu_s": round(ours_cpu_s, 3),
      "transformers_cpu_s": round(hf_cpu_s, 3),
      "cpu_ratio": round(hf_cpu_s / ours_cpu_s, 2),
      # Greedy first tokens agree unless float noise flips a near-tie (random weights).
      "first_token_agreement": agreement,
  }


def run_config(name: str, *, batch: int, new_tokens: int, clip_seconds: float, repeats: int,
               modes: tuple[str, ...], group_size: int) -> list[dict]:
  """Rows for one model preset. Modes: "distinct" = `batch` different prompts, greedy;
  "groups" = batch // group_size prompts x group_size samples at temperature 1 (GRPO's
  rollouts: we prefill each prompt once, `generate(num_return_sequences=G)` G times)."""
  import torch  # pylint: disable=g-import-not-at-top
  cfg = model_config.preset(name)
  with tempfile.TemporaryDirectory() as tmp:
    hf_model = _hf_model(cfg, pathlib.Path(tmp))
    model = hf.load(tmp)
  params_count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model)))
  vocab = cfg.text.vocab_size
  # Ids outside the vocabulary for the tags and the stop id, so nothing intervenes.
  tags = budgets_lib.TagIds(think_open=vocab, think_close=vocab + 1, answer_open=vocab + 2)
  scfg = sampler_lib.SamplerConfig(tags=tags, pad_id=PAD_ID, stop_ids=(vocab + 3,),
                                   max_new_tokens=new_tokens)
  sampler = sampler_lib.Sampler.for_model(model, scfg)
  params = nnx.state(model)
  rows = []
  for mode in modes:
    g = 1 if mode == "distinct" else group_size
    prompts = _prompts(cfg, batch // g, clip_seconds)
    control = dict(greedy=True) if mode == "distinct" else dict(temperature=1.0)
    hf_control = (dict(do_sample=False) if mode == "distinct" else
                  dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                       num_return_sequences=g))

    def ours():
      return jax.block_until_ready(sampler.generate(params, prompts, num_samples=g,
                                                    key=jax.random.key(0), **control))

    first, _, _ = _time(ours, 1)
    ours_s, ours_cpu, samples = _time(ours, repeats)
    samples = samples.to_numpy()
    assert (samples.lengths == new_tokens).all(), samples.lengths
    inputs = {k: torch.from_numpy(v) for k, v in prompts.items()}

    def theirs():
      with torch.no_grad():
        return hf_model.generate(**inputs, max_new_tokens=new_tokens, pad_token_id=PAD_ID,
                                 **hf_control)

    hf_s, hf_cpu, hf_out = _time(theirs, repeats)
    hf_tokens = hf_out[:, prompts["input_ids"].shape[1]:].numpy()
    assert hf_tokens.shape == (batch, new_tokens), hf_tokens.shape
    agreement = (float((samples.tokens[:, 0] == hf_tokens[:, 0]).mean())
                 if mode == "distinct" else None)
    rows.append(_row(name, mode, params_count, batch, new_tokens, ours_s, hf_s, first - ours_s,
                     agreement, ours_cpu, hf_cpu))
    print(f"  {name}/{mode}: ours {ours_s:.2f} s, transformers {hf_s:.2f} s", flush=True)
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="tiny,small")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--clip_seconds", type=float, default=10.0)
  parser.add_argument("--repeats", type=int, default=1, help="timed calls each (best kept)")
  parser.add_argument("--modes", default="distinct,groups")
  parser.add_argument("--group_size", type=int, default=8, help="G in the groups mode (CESAR: 8)")
  parser.add_argument("--json", default=None, help="write {'rows': [...]} here")
  args = parser.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{jax.device_count()}; "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads")
  rows = []
  modes = tuple(m.strip() for m in args.modes.split(","))
  for m in modes:
    if m not in ("distinct", "groups"):
      raise ValueError(f"--modes: unknown mode {m!r} (distinct, groups)")
  for name in args.configs.split(","):
    rows += run_config(name.strip(), batch=args.batch, new_tokens=args.new_tokens,
                       clip_seconds=args.clip_seconds, repeats=args.repeats, modes=modes,
                       group_size=args.group_size)
  print(f"\n{args.batch} sequences x {args.new_tokens} new tokens, {args.clip_seconds:g} s clips; "
        f"distinct = {args.batch} prompts, greedy; groups = {args.batch // args.group_size} "
        f"prompts x {args.group_size} samples, temperature 1")
  print("| config | mode | params | ours tok/s | transformers tok/s | ratio | CPU-time ratio "
        "| compile s |\n|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['config']} | {r['mode']} | {r['params'] / 1e6:.1f}M | {r['ours_tokens_per_s']:.0f} | "
          f"{r['transformers_tokens_per_s']:.0f} | {r['ratio']:.1f}x | {r['cpu_ratio']:.1f}x | "
          f"{r['compile_s']:.1f} |")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
