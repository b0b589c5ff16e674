r"""The `compile_check` job: compile a run's programs for a TPU slice on this machine, no TPU.

    python -m cesar_jax.main --config=configs/qwen2_audio_7b_cesar.py \
        --config.job=compile_check --config.compile_check.topology=v5e:8x8 --workdir=DIR

With libtpu installed (the `[tpu]` extra), `jax.experimental.topologies` gives abstract TPU
devices; the job builds the config's mesh over them, describes the train state, the batches and
the sampler's inputs as ShapeDtypeStructs carrying their NamedShardings (no weights), lowers the
programs a run executes exactly as the jobs build them (`Sampler.lower`, `GrpoUpdate.lower`,
`SftUpdate.lower`) and compiles them with the TPU compiler. It writes
`WORKDIR/compile_check.json`:

    {"topology", "chips", "hbm_per_chip_bytes", "programs": {NAME: {"argument_bytes",
     "output_bytes", "alias_bytes", "temp_bytes", "peak_bytes", "resident_bytes", "flops",
     "bytes_accessed", "repeats", "roofline_s", "compile_s", "fits"}}, "fits", ...}

and prints a table. Per device (= per chip on v5e / v6e / v5p): `peak_bytes` = argument +
output - alias + temp (what the program needs while it runs, as MaxText's train_compile
reports); `resident_bytes` = train-state arrays that stay in HBM during the program without
being its arguments (the optimizer state and the reference params while the sampler runs); a
program fits when peak + resident <= HBM. `flops` and `bytes_accessed` are per iteration of
the program's outer loop and `roofline_s` = `repeats` x max(flops / chip peak, bytes / HBM
bandwidth) (chips table: parallel/chips.py), with repeats = max_new_tokens for the decode
loop, grad_accum_steps x mu for the GRPO update, grad_accum_steps for the SFT step. A roofline
time is a lower bound (no collectives).

Depth. The layers run under `jax.lax.scan` (models/stack.py), so the full-depth program
compiles in about the time of a 2-layer one, and its memory figures are the real program's.
XLA's cost analysis counts a loop body once, though, so a scanned stack counts as one layer:
`layer_costs` compiles each program twice more, with two layers per loop iteration in one
stack (`stack.unrolled(2, ...)`), and counts every layer from the difference
(`cost_compile_s`). `compile_check.costs=False` skips those compiles: memory only, flops,
bytes and roofline None.

Shapes are the config's worst case: B = data.batch_size prompts of the largest prompt bucket,
G = sampling.num_samples, M = sampling.max_new_tokens, data.chunk_seconds of audio (100 mel
frames per second); SFT: sft.batch_size prompts and sft.max_target_tokens targets.

Model shape: as the run's (`init_from` a HF directory: its config.json; a run workdir: its
model_config.json; random init: the config's model section, with the tokenizer's vocabulary
unless the preset's is larger, i.e. the real checkpoint's size). `compile_check.remat` and
`compile_check.logits_chunk` override the model's remat policy and the updates' log-prob chunk,
to measure each memory measure on and off. A program the TPU compiler refuses for lack of HBM
is reported as not fitting, with the temporaries it asked for (`out_of_memory`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import time
from typing import Any, Mapping

from cesar_jax import platforms

platforms.default_to_cpu()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402
from etils import epath  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from cesar_jax import lora as lora_lib  # noqa: E402
from cesar_jax import model_store  # noqa: E402
from cesar_jax.models.audio_encoder import EncoderLayer  # noqa: E402
from cesar_jax.models.audio_lm import AudioLM  # noqa: E402
from cesar_jax.models.decoder import DecoderLayer  # noqa: E402
from cesar_jax.models import config as model_config_lib  # noqa: E402
from cesar_jax.models import stack  # noqa: E402
from cesar_jax.parallel import chips as chips_lib  # noqa: E402
from cesar_jax.parallel import mesh as mesh_lib  # noqa: E402
from cesar_jax.rl import optim  # noqa: E402
from cesar_jax.rl import train_lib  # noqa: E402
from cesar_jax.rl import train_step  # noqa: E402
from cesar_jax.sampling import batching  # noqa: E402
from cesar_jax.sampling import sampler as sampler_lib  # noqa: E402

PROGRAMS = ("sampler_prefill", "sampler_decode", "grpo_update", "sft_step")
REPORT_FILE = "compile_check.json"
FRAMES_PER_SECOND = 100  # Whisper's log-mel hop: 10 ms


# ---------------------------------------------------------------------------------------------
# Abstract devices, mesh, arrays.
# ---------------------------------------------------------------------------------------------


def topology_devices(topology: str) -> list[Any]:
  """The abstract TPU devices of a named topology (needs libtpu; no TPU)."""
  chips_lib.parse_topology(topology)  # a clear error before libtpu's
  if not platforms.libtpu_installed():
    raise RuntimeError("compile_check needs libtpu: pip install -e '.[tpu]' "
                       "(jax[tpu] pinned to the installed jax)")
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", chips_lib.accelerator_type(topology))
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  # No chip is opened: several compile checks (or test workers) may hold libtpu at once.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  return list(topologies.get_topology_desc(platform="tpu", topology_name=topology).devices)


def make_mesh(shape, devices) -> Mesh:
  """The config's mesh over abstract devices (plain device order where jax's TPU layout
  helper refuses, e.g. v4's two devices per chip)."""
  try:
    return mesh_lib.make_mesh(shape, devices=devices)
  except (AssertionError, ValueError, NotImplementedError):
    shape = list(shape)
    if -1 in shape:
      shape[shape.index(-1)] = len(devices) // math.prod(s for s in shape if s != -1)
    auto = (jax.sharding.AxisType.Auto,) * len(shape)
    return Mesh(np.asarray(devices).reshape(shape), mesh_lib.MESH_AXES, axis_types=auto)


def _sds(shape, dtype, sharding=None) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype), sharding=sharding)


def abstract_like(tree: Any, shardings: Any = None) -> Any:
  """ShapeDtypeStructs of a tree of arrays (host or abstract), with shardings if given."""
  if shardings is None:
    return jax.tree.map(lambda x: _sds(np.shape(x), x.dtype), tree)
  return jax.tree.map(lambda x, s: _sds(np.shape(x), x.dtype, s), tree, shardings)


def compute_copy(params: Any, dtype: Any) -> tuple[Any, int]:
  """Abstract `train_lib.cast_params`: (the sampler's params: floating leaves in `dtype`,
  same shardings; bytes per device of the masters that were copied, held beside them)."""
  dtype = jnp.dtype(dtype)
  copied = [0]

  def cast(x):
    if train_lib.is_cast(x, dtype):
      copied[0] += device_bytes(x)
      return _sds(x.shape, dtype, x.sharding)
    return x
  policy = jax.tree.map(cast, params)
  return policy, copied[0]


def device_bytes(tree: Any) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard)."""
  total = 0
  for x in jax.tree.leaves(tree):
    shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
    total += math.prod(shape) * jnp.dtype(x.dtype).itemsize
  return int(total)


# ---------------------------------------------------------------------------------------------
# The run's model, state and inputs, abstractly.
# ---------------------------------------------------------------------------------------------


def model_config(config: ml_collections.ConfigDict, tokenizer) -> model_config_lib.AudioLMConfig:
  """The model shape the run would have (see the module docstring)."""
  return _run_model_config(config, tokenizer)


def _run_model_config(config, tokenizer) -> model_config_lib.AudioLMConfig:
  section = dict(config.model.items())
  init_from = str(config.init_from)
  overrides = {}
  if config.compile_check.remat:
    overrides["remat"] = str(config.compile_check.remat)
  if init_from and model_store.is_hf_dir(init_from):
    hf = json.loads((epath.Path(init_from) / "config.json").read_text())
    dtypes = {k: section[k] for k in ("dtype", "param_dtype") if k in section}
    return model_config_lib.AudioLMConfig.from_hf(hf, **dtypes, **overrides)
  if init_from and model_store.is_run_workdir(init_from):
    return model_store.read_model_config(init_from).replace(**overrides)
  own = model_config_lib.from_config_dict(section)
  if tokenizer.vocab_size >= own.text.vocab_size:
    own = model_store.resolve_model_config(section, tokenizer)
  return own.replace(**overrides)


def abstract_train_state(cfg: model_config_lib.AudioLMConfig, tx, mesh: Mesh, lora=None):
  """(graphdef, abstract train state with shardings, its shardings), as init_train_state.

  With `lora` enabled (a `config.lora` section): the base in the compute dtype and float32
  adapters, as `model_store.add_adapters` makes them (the trainable part is the adapters).
  """
  if lora_lib.enabled(lora):
    def build():
      model = AudioLM(cfg.replace(param_dtype=cfg.dtype), rngs=nnx.Rngs(0))
      lora_lib.apply(model, lora)
      adapters = nnx.state(model, nnx.LoRAParam)
      nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.float32), adapters))
      return model
    graphdef, params = nnx.split(nnx.eval_shape(build))
    params = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                          params, mesh_lib.state_shardings(params, mesh))
  else:
    graphdef, params = model_store.abstract_model(cfg, mesh)
  trainable, _ = train_lib.split_trainable(params)
  state = {"params": params, "opt_state": jax.eval_shape(tx.init, trainable)}
  shardings = train_lib.state_shardings(state, mesh)
  return graphdef, abstract_like(state, shardings), shardings


def _frames(config) -> int:
  frames = int(round(float(config.data.chunk_seconds) * FRAMES_PER_SECOND))
  return frames + frames % 2  # the encoder takes an even number of frames


def _prompt_arrays(b: int, p: int, n_mels: int, frames: int) -> dict[str, jax.ShapeDtypeStruct]:
  return {"prompt_ids": _sds((b, p), jnp.int32), "prompt_mask": _sds((b, p), jnp.int32),
          "input_features": _sds((b, n_mels, frames), jnp.float32),
          "feature_mask": _sds((b, frames), jnp.int32)}


def _step_config(config, chunk: int) -> train_step.StepConfig:
  from cesar_jax.rl import trainer  # pylint: disable=g-import-not-at-top
  step = trainer.step_config(config)
  if chunk >= 0:
    step = dataclasses.replace(step, logits_chunk=chunk)
  return step


def lower_programs(config: ml_collections.ConfigDict, mesh: Mesh, tokenizer,
                   names=PROGRAMS) -> dict[str, dict[str, Any]]:
  """{name: {"lowered", "repeats", "resident"}} for the programs named. Lowered under
  `jax.set_mesh(mesh)` when `config.compile_check.activation_constraints` (as the jobs run)."""
  from cesar_jax import sft  # pylint: disable=g-import-not-at-top
  from cesar_jax.rl import trainer  # pylint: disable=g-import-not-at-top
  unknown = sorted(set(names) - set(PROGRAMS))
  if unknown:
    raise ValueError(f"config.compile_check.programs: unknown {unknown}; known: {PROGRAMS}")
  cfg = model_config(config, tokenizer)
  tx = optim.make_optimizer(config.optim)
  graphdef, state, shardings = abstract_train_state(cfg, tx, mesh, config.get("lora"))
  step = _step_config(config, int(config.compile_check.logits_chunk))
  b, g = int(config.data.batch_size), int(config.sampling.num_samples)
  p, m = max(int(x) for x in config.data.buckets), int(config.sampling.max_new_tokens)
  n_mels, frames = int(config.data.n_mels), _frames(config)
  # The reference is the policy's trainable part at the start (train_step.GrpoUpdate).
  ref = train_lib.split_trainable(state["params"])[0] if step.loss.beta > 0 else None
  out: dict[str, dict[str, Any]] = {}
  context = (jax.set_mesh(mesh) if config.compile_check.activation_constraints
             else contextlib.nullcontext())

  if {"sampler_prefill", "sampler_decode"} & set(names):
    sampler = sampler_lib.Sampler(graphdef, trainer.sampler_config(config, tokenizer), mesh)
    prompts = _prompt_arrays(b, p, n_mels, frames)
    batch = batching.PromptBatch(
        input_ids=prompts["prompt_ids"], attention_mask=prompts["prompt_mask"],
        input_features=prompts["input_features"],
        feature_attention_mask=prompts["feature_mask"])
    # A raw key (no eager jax op: the default backend may be a bare TPU topology here).
    controls = abstract_like(sampler.controls(b * g, key=np.zeros((2,), np.uint32)))
    # The sampler runs a compute-dtype copy of the masters, as the GRPO job passes it
    # (`train_lib.cast_params`); the masters stay in HBM beside it.
    policy, masters = compute_copy(state["params"], cfg.dtype)
    with context:
      prefill, decode = sampler.lower(policy, batch, controls, num_samples=g)
    # Held in HBM while sampling without being an argument: the masters of the copied leaves,
    # the optimizer state, the reference.
    resident = (masters + device_bytes(state["opt_state"])
                + (0 if ref is None else device_bytes(ref)))
    out["sampler_prefill"] = dict(lowered=prefill, repeats=1, resident=resident)
    out["sampler_decode"] = dict(lowered=decode, repeats=m, resident=resident)

  if "grpo_update" in names:
    update = train_step.GrpoUpdate(graphdef, tx, step, mesh, shardings)
    n = b * g
    rollouts = train_step.Rollouts(
        **_prompt_arrays(b, p, n_mels, frames), completions=_sds((n, m), jnp.int32),
        completion_mask=_sds((n, m), bool), loss_mask=_sds((n, m), bool),
        old_logp=_sds((n, m), jnp.float32), advantages=_sds((n,), jnp.float32),
        loss_scale=_sds((), jnp.float32))
    with context:
      lowered = update.lower(state, rollouts, ref)
    out["grpo_update"] = dict(lowered=lowered, repeats=step.grad_accum_steps * step.mu,
                              resident=0)

  if "sft_step" in names:
    k = int(config.sft.grad_accum_steps)
    chunk = int(config.compile_check.logits_chunk)
    kwargs = {} if chunk < 0 else {"logits_chunk": chunk}
    sft_tx = optim.make_optimizer(sft.optim_section(config))
    update = sft.SftUpdate(graphdef, sft_tx, k, mesh, shardings, **kwargs)
    bs, t = int(config.sft.batch_size), int(config.sft.max_target_tokens)
    batch = dict(_prompt_arrays(bs, p, n_mels, frames), targets=_sds((bs, t), jnp.int32),
                 target_mask=_sds((bs, t), jnp.int32))
    with context:
      lowered = update.lower(state, batch)
    out["sft_step"] = dict(lowered=lowered, repeats=k, resident=0)
  return {name: out[name] for name in names}


# ---------------------------------------------------------------------------------------------
# Analysis, report.
# ---------------------------------------------------------------------------------------------


def cost(compiled) -> tuple[float, float]:
  """(flops, bytes accessed) per device of a compiled program, by XLA's cost analysis (a loop
  body counted once)."""
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis.get("flops", 0.0)), float(analysis.get("bytes accessed", 0.0))


def analyse(compiled, chip: chips_lib.ChipSpec, *, repeats: int, resident: int,
            budget: int, devices_per_chip: int = 1) -> dict[str, Any]:
  """The per-device figures of one compiled program (see the module docstring), its flops and
  bytes by its own cost analysis (for a scanned stack, one layer's: `check` replaces them)."""
  mem = compiled.memory_analysis()
  arg, out = int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes)
  alias, temp = int(mem.alias_size_in_bytes), int(mem.temp_size_in_bytes)
  peak = arg + out - alias + temp
  flops, nbytes = cost(compiled)
  return {
      "argument_bytes": arg, "output_bytes": out, "alias_bytes": alias, "temp_bytes": temp,
      "peak_bytes": peak, "resident_bytes": int(resident), "flops": flops,
      "bytes_accessed": nbytes, "repeats": int(repeats),
      "roofline_s": repeats * chip.roofline_s(flops, nbytes, devices_per_chip),
      "fits": peak + resident <= budget,
  }


_OOM_TEMP = re.compile(r"HLO temporaries \(([0-9.]+)([KMGT])\)")


def out_of_memory(message: str, *, repeats: int, resident: int) -> dict[str, Any]:
  """The entry of a program the TPU compiler refused for lack of HBM: not fitting, with the
  temporaries it asked for (its message's figure) and no cost figures."""
  match = _OOM_TEMP.search(message)
  temp = 0
  if match:
    temp = int(float(match.group(1)) * 1024**"KMGT".index(match.group(2)) * 1024)
  return {"argument_bytes": 0, "output_bytes": 0, "alias_bytes": 0, "temp_bytes": temp,
          "peak_bytes": temp, "resident_bytes": int(resident), "flops": 0.0,
          "bytes_accessed": 0.0, "repeats": int(repeats), "roofline_s": None,
          "fits": False, "error": message.strip().splitlines()[0][:500]}


def layer_costs(config, mesh, tokenizer, scanned: Mapping[str, tuple[float, float]]
                ) -> tuple[dict[str, tuple[float, float]], float]:
  """({program: (flops, bytes accessed)} with every layer counted, compile seconds they took).

  `scanned`: the programs' own costs, c = the work outside the loops + one decoder layer + one
  encoder layer. Compiled with two layers per iteration of one stack (`stack.unrolled(2,
  DecoderLayer)`, likewise the encoder), a program counts that stack's layer 2 + (L mod 2)
  times (an odd remainder runs after the loop); the difference is one layer, so at (D, E)
  layers it costs c + (D - 1) layer_D + (E - 1) layer_E.
  """
  cfg = model_config(config, tokenizer)
  stacks = ((DecoderLayer, cfg.text.num_hidden_layers), (EncoderLayer, cfg.audio.encoder_layers))
  total = {name: np.array(c, float) for name, c in scanned.items()}
  start = time.perf_counter()
  for layer_type, depth in stacks:
    with stack.unrolled(2, layer_type):
      lowered = lower_programs(config, mesh, tokenizer, tuple(scanned))
    for name, item in lowered.items():
      doubled = np.array(cost(item["lowered"].compile()), float)
      one_layer = (doubled - np.array(scanned[name], float)) / (1 + depth % 2)
      total[name] += (depth - 1) * one_layer
  return ({name: (float(c[0]), float(c[1])) for name, c in total.items()},
          time.perf_counter() - start)


def check(config: ml_collections.ConfigDict, on_update=None) -> dict[str, Any]:
  """Compiles the configured programs for `config.compile_check.topology`; the report dict.

  Every program is compiled at the run's full depth (memory, `compile_s`), then its flops and
  bytes come from `layer_costs`. `on_update(report)` is called after each compiled program and
  at the end (the job writes the JSON each time).
  """
  section = config.compile_check
  topology = str(section.topology)
  chip = chips_lib.chip_for_topology(topology)
  devices = topology_devices(topology)
  per_chip = len({getattr(d, "core_on_chip", 0) for d in devices})
  hbm = int(float(section.hbm_gib) * chips_lib.GiB) if float(section.hbm_gib) > 0 else chip.hbm_bytes
  budget = hbm // per_chip
  mesh = make_mesh(tuple(int(s) for s in config.mesh.shape), devices)
  tokenizer = model_store.load_tokenizer(config.tokenizer, config.init_from)
  cfg = model_config(config, tokenizer)
  names = tuple(section.programs)
  report: dict[str, Any] = {
      "topology": topology, "chips": len(devices) // per_chip, "hbm_per_chip_bytes": hbm,
      "devices_per_chip": per_chip, "mesh": dict(mesh.shape), "chip": chip.name,
      "chip_source": chip.source,
      "model": {"remat": cfg.remat, "dtype": cfg.dtype, "param_dtype": cfg.param_dtype,
                "decoder_layers": cfg.text.num_hidden_layers,
                "encoder_layers": cfg.audio.encoder_layers},
      "logits_chunk": _step_config(config, int(section.logits_chunk)).logits_chunk,
      "programs": {}, "fits": None,
  }
  programs, scanned = report["programs"], {}  # the compiled programs' own costs
  for name, item in lower_programs(config, mesh, tokenizer, names).items():
    start = time.perf_counter()
    try:
      executable = item["lowered"].compile()
    except jax.errors.JaxRuntimeError as e:
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      programs[name] = out_of_memory(str(e), repeats=item["repeats"], resident=item["resident"])
    else:
      scanned[name] = cost(executable)
      programs[name] = analyse(executable, chip, repeats=item["repeats"],
                               resident=item["resident"], budget=budget,
                               devices_per_chip=per_chip)
      programs[name].update(flops=None, bytes_accessed=None, roofline_s=None)  # layer_costs
      del executable  # not held through the next compile
    programs[name]["compile_s"] = round(time.perf_counter() - start, 2)
    logging.info("compiled %s for %s in %.1f s", name, topology, programs[name]["compile_s"])
    if on_update is not None:
      on_update(report)
  costs, seconds = (layer_costs(config, mesh, tokenizer, scanned) if section.costs and scanned
                    else ({}, 0.0))
  for name, (flops, nbytes) in costs.items():
    p = programs[name]
    p.update(flops=flops, bytes_accessed=nbytes, cost_compile_s=round(seconds, 2),
             roofline_s=p["repeats"] * chip.roofline_s(flops, nbytes, per_chip))
  report["fits"] = all(p["fits"] for p in programs.values())
  if on_update is not None:
    on_update(report)
  return report


def format_table(report: Mapping[str, Any]) -> str:
  """A fixed-width table of the report (GiB per device, roofline seconds)."""
  gib = lambda x: f"{x / chips_lib.GiB:8.2f}"  # noqa: E731
  lines = [f"compile_check {report['topology']}: {report['chips']} chips, "
           f"{report['hbm_per_chip_bytes'] / chips_lib.GiB:.1f} GiB HBM per chip, mesh "
           f"{report['mesh']}, fits: {report['fits']}",
           f"{'program':16s} {'args':>8s} {'out':>8s} {'alias':>8s} {'temp':>8s} {'peak':>8s} "
           f"{'+resid':>8s} {'fits':>5s} {'TFLOP':>9s} {'GB acc':>8s} {'x':>4s} "
           f"{'roofline':>9s} {'compile':>8s}"]
  for name, p in report["programs"].items():
    lines.append(
        f"{name:16s} {gib(p['argument_bytes'])} {gib(p['output_bytes'])} {gib(p['alias_bytes'])} "
        f"{gib(p['temp_bytes'])} {gib(p['peak_bytes'])} "
        f"{gib(p['peak_bytes'] + p['resident_bytes'])} {str(p['fits']):>5s} "
        + (f"{p['flops'] / 1e12:9.3f} {p['bytes_accessed'] / 1e9:8.2f} " if p["flops"] is not None
           else f"{'-':>9s} {'-':>8s} ") + f"{p['repeats']:4d} "
        + ("(refused: out of HBM) " if "error" in p else "")
        + (f"{p['roofline_s']:8.3f}s" if p["roofline_s"] is not None else f"{'-':>9s}")
        + f" {p['compile_s']:7.1f}s")
  lines.append("(GiB per device; TFLOP and GB accessed per loop iteration; roofline = x * max("
               "flops / peak, bytes / HBM bandwidth))")
  return "\n".join(lines)


def write_report(report: Mapping[str, Any], workdir: str) -> epath.Path:
  path = epath.Path(workdir) / REPORT_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
  return path


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """The `compile_check` job (cesar_jax.main)."""
  write = (lambda r: write_report(r, workdir)) if jax.process_index() == 0 else None
  report = check(config, on_update=write)
  if jax.process_index() == 0:
    path = write_report(report, workdir)
    print(format_table(report))
    logging.info("wrote %s", path)
