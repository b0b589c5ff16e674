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

Against the machine's limit (issue 13). Each (config, mode) also reports:

* `prefill_s`: our `generate` with `max_new_tokens=1` (best of `--repeats`): the prefill (audio
  encoder + prompt), the first token's selection and the host-side batching; no decode step.
* `decode_step_s`: (call time at `--new_tokens` - call time at 1 new token) / (new_tokens - 1).
  `max_new_tokens` is a traced control, so both calls run the same executables (asserted with
  `Sampler.compile_count`); every step costs the same since attention reads all the cache's
  static slots whatever the step.
* `limit_step_s`: the least time this machine needs for one decode step =
  max(bytes_per_step / bandwidth, flops_per_step / matmul peak), `limit_kind` naming the larger
  ("memory" or "compute"). Rates are measured at the start of the run (benchmarks/machine.py):
  the bandwidth is the in-cache read rate when a step's bytes fit in L3, else the DRAM rate (the
  better of a read and a copy); the matmul peak is the better of a large square f32 matmul and
  one of the decode's own MLP shape. `decode_step_cost` counts a step:
  bytes = the decoder's weights in the compute dtype (layers, final norm, the LM head; the
          embedding rows gathered, or the whole table when tied) + every KV slot the cache
          stores (attention reads all static slots, padding and not-yet-written ones included);
  flops = 2 x weight-matrix params x rows + attention's 4 x layers x heads x head_dim x rows x
          slots attended (norms, biases, RoPE and the softmax left out). Neither count has
          the sampling step or the token buffers (about 1% of the bytes on tiny, less on small).

  python benchmarks/sampler.py                       # tiny and small, 32 x 128 tokens, both modes
  python benchmarks/sampler.py --configs tiny --json /tmp/sampler.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks import machine as machine_lib  # noqa: E402
from cesar_jax.checkpoints import hf  # noqa: E402
from cesar_jax.models import audio_lm  # noqa: E402
from cesar_jax.models import config as model_config  # noqa: E402
from cesar_jax.sampling import batching  # noqa: E402
from cesar_jax.sampling import budgets as budgets_lib  # noqa: E402
from cesar_jax.sampling import sampler as sampler_lib  # noqa: E402

TEXT_TOKENS = 40
PAD_ID = 0


def decode_step_cost(text: model_config.DecoderConfig, *, rows: int, attended_slots: int,
                     stored_slots: int, dtype_bytes: int, cache_bytes: int) -> dict[str, int]:
  """Bytes read and flops of one decode step of the Qwen2 decoder (see the module docstring).

  Args:
    text: the decoder's config.
    rows: N sequences decoded together (B prompts x G samples).
    attended_slots: cache slots each row's attention runs over (the static cache length).
    stored_slots: (row, slot) pairs the cache stores per layer, all read by attention: N x S
      for a cache of N rows, fewer when rows share a prompt's slots.
    dtype_bytes: bytes per weight element in the compute dtype.
    cache_bytes: bytes per KV-cache element.

  Returns:
    ints: weight_bytes (layers + final norm + LM head, and the embedding as read), kv_bytes,
    bytes (their sum), matmul_flops, attention_flops, flops (their sum), params_touched (the
    weight-matrix params a row multiplies by).
  """
  e, f, v, layers = text.hidden_size, text.intermediate_size, text.vocab_size, text.num_hidden_layers
  q, kv = text.num_attention_heads * text.kv_head_dim, text.num_key_value_heads * text.kv_head_dim
  layer_matrices = e * q + 2 * e * kv + q * e + 3 * e * f   # q, k, v, o, gate, up, down
  layer_params = layer_matrices + q + 2 * kv + 2 * e       # + q/k/v biases, two norms
  head = e * v                                              # the LM head, read whole each step
  embed_read = 0 if text.tie_word_embeddings else rows * e  # untied: only the rows gathered
  weight_bytes = dtype_bytes * (layers * layer_params + e + head + embed_read)
  kv_bytes = cache_bytes * layers * 2 * kv * stored_slots
  params_touched = layers * layer_matrices + head
  matmul_flops = 2 * params_touched * rows
  attention_flops = 4 * layers * q * rows * attended_slots  # q.k and p.v, each 2 flops a MAC
  return {"weight_bytes": weight_bytes, "kv_bytes": kv_bytes, "bytes": weight_bytes + kv_bytes,
          "matmul_flops": matmul_flops, "attention_flops": attention_flops,
          "flops": matmul_flops + attention_flops, "params_touched": params_touched}


def step_limit(cost: dict[str, int], machine: machine_lib.Machine,
               mlp_shape: tuple[int, int, int] | None = None) -> dict:
  """The least seconds a step with `cost` needs here: memory time vs compute time, the larger."""
  bandwidth, where = machine.bandwidth_for(cost["bytes"])
  peak = machine.matmul_peak(mlp_shape)
  memory_s, compute_s = cost["bytes"] / bandwidth, cost["flops"] / peak
  return {"limit_step_s": max(memory_s, compute_s),
          "limit_kind": "memory" if memory_s >= compute_s else "compute",
          "memory_s": memory_s, "compute_s": compute_s, "bandwidth_Bps": bandwidth,
          "bandwidth_kind": where, "matmul_peak_flops": peak}


def _cache_slots(sampler: sampler_lib.Sampler, params, prompts, num_samples: int,
                 text: model_config.DecoderConfig) -> tuple[int, int, int]:
  """(attended slots per row, stored (row, slot) pairs per layer, KV element bytes) of the cache
  the sampler's prefill builds for these prompts, from its lowered output shapes (nothing runs).
  K and V are the `KVCache`'s own arrays [L, rows, H_kv, slots, D] plus its shared prompt
  part (`cache.prefix`, [L, prompts, H_kv, P, D]: a prompt's slots stored once per group)."""
  cfg = sampler.config
  batch = batching.make_batch(prompts, buckets=cfg.prompt_buckets, pad_id=cfg.pad_id,
                              frame_buckets=cfg.frame_buckets)
  controls = sampler.controls(batch.batch_size * num_samples)
  prefill, _ = sampler.lower(params, batch, controls, num_samples=num_samples)
  _, cache = prefill.out_info  # (logits, cache) of ShapeDtypeStructs
  kv = [cache.k, cache.v]
  if cache.prefix is not None:
    kv += [cache.prefix.k, cache.prefix.v]
  per_slot = 2 * text.num_hidden_layers * text.num_key_value_heads * text.kv_head_dim
  elements = sum(math.prod(x.shape) for x in kv)
  if elements % per_slot:
    raise ValueError(f"sampler cache: K/V shapes {[x.shape for x in kv]} are not "
                     f"{text.num_hidden_layers} layers x (K, V) of whole slots")
  attended = batch.input_ids.shape[1] + cfg.max_new_tokens
  return attended, elements // per_slot, np.dtype(kv[0].dtype).itemsize


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
         ours_cpu_s, hf_cpu_s, *, prefill_s, decode_step_s, limit, cost, slots):
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
      # Against the machine's limit (module docstring).
      "prefill_s": round(prefill_s, 4),
      "decode_step_s": decode_step_s,
      "limit_step_s": limit["limit_step_s"],
      "step_over_limit": round(decode_step_s / limit["limit_step_s"], 2),
      "limit_kind": limit["limit_kind"],
      "memory_s": limit["memory_s"],
      "compute_s": limit["compute_s"],
      "bandwidth_Bps": limit["bandwidth_Bps"],
      "bandwidth_kind": limit["bandwidth_kind"],
      "matmul_peak_flops": limit["matmul_peak_flops"],
      "bytes_per_step": cost["bytes"],
      "weight_bytes_per_step": cost["weight_bytes"],
      "kv_bytes_per_step": cost["kv_bytes"],
      "flops_per_step": cost["flops"],
      "attention_flops_per_step": cost["attention_flops"],
      "cache_slots_attended": slots[0],
      "cache_slots_stored": slots[1],
  }


def mlp_shape(cfg: model_config.AudioLMConfig, rows: int) -> tuple[int, int, int]:
  """(m, k, n) of a decode step's MLP matmul: [rows, hidden] @ [hidden, ffn]."""
  return (rows, cfg.text.hidden_size, cfg.text.intermediate_size)


def run_config(name: str, *, batch: int, new_tokens: int, clip_seconds: float, repeats: int,
               modes: tuple[str, ...], group_size: int,
               machine: machine_lib.Machine) -> list[dict]:
  """Rows for one model preset. Modes: "distinct" = `batch` different prompts, greedy;
  "groups" = batch // group_size prompts x group_size samples at temperature 1 (GRPO's
  rollouts: we prefill each prompt once, `generate(num_return_sequences=G)` G times)."""
  import torch  # pylint: disable=g-import-not-at-top
  if new_tokens < 2:
    raise ValueError(f"--new_tokens={new_tokens}: need >= 2 (the decode step is a difference "
                     "between calls of new_tokens and 1 tokens)")
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
  decoder_params = sum(int(np.prod(x.shape))
                       for x in jax.tree.leaves(nnx.state(model.language_model)))
  rows = []
  for mode in modes:
    g = 1 if mode == "distinct" else group_size
    prompts = _prompts(cfg, batch // g, clip_seconds)
    control = dict(greedy=True) if mode == "distinct" else dict(temperature=1.0)
    hf_control = (dict(do_sample=False) if mode == "distinct" else
                  dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                       num_return_sequences=g))

    def ours(max_new=new_tokens):
      return jax.block_until_ready(sampler.generate(params, prompts, num_samples=g,
                                                    key=jax.random.key(0),
                                                    max_new_tokens=max_new, **control))

    first, _, _ = _time(ours, 1)
    compiles = sampler.compile_count
    ours_s, ours_cpu, samples = _time(ours, repeats)
    samples = samples.to_numpy()
    assert (samples.lengths == new_tokens).all(), samples.lengths
    prefill_s, _, one = _time(lambda: ours(1), repeats)
    assert (one.to_numpy().lengths == 1).all(), one.to_numpy().lengths
    if sampler.compile_count != compiles:
      raise RuntimeError(f"{name}/{mode}: max_new_tokens recompiled the sampler "
                         f"({compiles} -> {sampler.compile_count} executables)")
    decode_step_s = (ours_s - prefill_s) / (new_tokens - 1)
    slots = _cache_slots(sampler, params, prompts, g, cfg.text)
    cost = decode_step_cost(cfg.text, rows=batch, attended_slots=slots[0],
                            stored_slots=slots[1], dtype_bytes=cfg.compute_dtype.itemsize,
                            cache_bytes=slots[2])
    counted = (cost["weight_bytes"] // cfg.compute_dtype.itemsize
               - (0 if cfg.text.tie_word_embeddings else batch * cfg.text.hidden_size)
               + (0 if cfg.text.tie_word_embeddings else vocab * cfg.text.hidden_size))
    if counted != decoder_params:  # the hand count must cover every decoder parameter
      raise RuntimeError(f"{name}: decode_step_cost counts {counted} decoder params, the "
                         f"model has {decoder_params}")
    limit = step_limit(cost, machine, mlp_shape(cfg, batch))
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
                     agreement, ours_cpu, hf_cpu, prefill_s=prefill_s,
                     decode_step_s=decode_step_s, limit=limit, cost=cost, slots=slots))
    print(f"  {name}/{mode}: ours {ours_s:.2f} s (prefill {prefill_s:.2f} s, decode step "
          f"{decode_step_s * 1e3:.2f} ms, limit {limit['limit_step_s'] * 1e3:.2f} ms), "
          f"transformers {hf_s:.2f} s", flush=True)
  return rows


def _bound(row: dict) -> str:
  """"compute", or "memory (L3)" / "memory (DRAM)": what sets the row's limit."""
  if row["limit_kind"] == "compute":
    return "compute"
  return "memory (L3)" if row["bandwidth_kind"] == "cache" else "memory (DRAM)"


def tables(rows: list[dict]) -> str:
  """The two markdown tables of a run (docs/benchmarks.md quotes them as printed)."""
  out = ["| config | mode | params | ours tok/s | transformers tok/s | ratio | CPU-time ratio "
         "| compile s |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    out.append(f"| {r['config']} | {r['mode']} | {r['params'] / 1e6:.1f}M | "
               f"{r['ours_tokens_per_s']:.0f} | {r['transformers_tokens_per_s']:.0f} | "
               f"{r['ratio']:.1f}x | {r['cpu_ratio']:.1f}x | {r['compile_s']:.1f} |")
  out += ["", "| config | mode | prefill s | decode step ms | limit ms | step / limit | bound "
          "| MB / step (weights + KV) | GFLOP / step |", "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    out.append(f"| {r['config']} | {r['mode']} | {r['prefill_s']:.3f} | "
               f"{r['decode_step_s'] * 1e3:.2f} | {r['limit_step_s'] * 1e3:.2f} | "
               f"{r['step_over_limit']:.1f}x | {_bound(r)} | "
               f"{r['bytes_per_step'] / 1e6:.1f} ({r['weight_bytes_per_step'] / 1e6:.1f} + "
               f"{r['kv_bytes_per_step'] / 1e6:.1f}) | {r['flops_per_step'] / 1e9:.3f} |")
  return "\n".join(out)


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="tiny,small")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--clip_seconds", type=float, default=10.0)
  parser.add_argument("--repeats", type=int, default=2, help="timed calls each (best kept)")
  parser.add_argument("--modes", default="distinct,groups")
  parser.add_argument("--group_size", type=int, default=8, help="G in the groups mode (CESAR: 8)")
  parser.add_argument("--machine_repeats", type=int, default=10,
                      help="calls of each machine measurement (best kept)")
  parser.add_argument("--dram_mib", type=int, default=machine_lib.DRAM_BYTES // 2**20,
                      help="array size of the DRAM bandwidth measurement (MiB; past the L3)")
  parser.add_argument("--json", default=None,
                      help="write {'machine': {...}, 'load_average': [...], 'rows': [...]} here")
  args = parser.parse_args(argv)
  import torch  # pylint: disable=g-import-not-at-top
  modes = tuple(m.strip() for m in args.modes.split(","))
  for m in modes:
    if m not in ("distinct", "groups"):
      raise ValueError(f"--modes: unknown mode {m!r} (distinct, groups)")
  names = [n.strip() for n in args.configs.split(",")]
  load = os.getloadavg()
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  command = " ".join(["python benchmarks/sampler.py", *(sys.argv[1:] if argv is None else argv)])
  print(f"{command}\nrun {now}, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
        f"(1 / 5 / 15 min); jax {jax.__version__} on {jax.devices()[0].platform} "
        f"x{jax.device_count()}; torch {torch.__version__} with {torch.get_num_threads()} threads")
  shapes = list(dict.fromkeys(mlp_shape(model_config.preset(n), args.batch) for n in names))
  machine = machine_lib.measure(shapes, repeats=args.machine_repeats,
                                dram_bytes=args.dram_mib * 2**20)
  print(machine_lib.describe(machine), flush=True)
  rows = []
  for name in names:
    rows += run_config(name, batch=args.batch, new_tokens=args.new_tokens,
                       clip_seconds=args.clip_seconds, repeats=args.repeats, modes=modes,
                       group_size=args.group_size, machine=machine)
  end_load = os.getloadavg()
  print(f"\n{args.batch} sequences x {args.new_tokens} new tokens, {args.clip_seconds:g} s clips; "
        f"distinct = {args.batch} prompts, greedy; groups = {args.batch // args.group_size} "
        f"prompts x {args.group_size} samples, temperature 1; best of {args.repeats} calls; "
        f"load average at the end {end_load[0]:.2f} / {end_load[1]:.2f} / {end_load[2]:.2f}")
  print(tables(rows))
  out = {"command": command, "date": now, "load_average": list(load),
         "load_average_end": list(end_load), "machine": machine.to_json(), "rows": rows}
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
  return out


if __name__ == "__main__":
  main()
