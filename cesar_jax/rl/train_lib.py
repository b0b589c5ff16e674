"""What the `sft` and `grpo` jobs share: mesh, data, the train state, and the resumable loop.

The train state is a plain pytree `{"params": nnx.State, "opt_state": optax state}`: `params`
holds every variable of the model (`nnx.split`), the optimizer only its trainable part: HF's
trainable set (`models.TRAINABLE`), or, when the model carries LoRA adapters (`config.lora`,
cesar_jax/lora.py), the adapters alone (`trainable_filter`: the model decides, no flag). The
orbax checkpoints hold the train state, sharded by the rule table of `parallel/mesh.py` (the
optimizer moments carry their parameter's logical axes); with adapters they hold only the
adapters and their optimizer state (`checkpoint_view`), the frozen base being the run's
`init_from`.

`train_loop` is the loop both jobs run:

    restore the latest finalized checkpoint (state, data-iterator state) if there is one
    for step in start .. total - 1:               # 0-based, as MetricsWriter's
      state, metrics, texts = step_fn(state, step, fold_in(base_key, step))
      write metrics (console, bar, TensorBoard, WORKDIR/metrics.jsonl)
      stop after too many non-finite steps in a row (config.optim.max_consecutive_skips)
      save on the interval, at the end, or on SIGTERM (then exit cleanly)

Every random draw of step k comes from `fold_in(key(seed), k)` and the data iterator's state
is checkpointed with the parameters, so a run killed at any point and resumed with the same
command writes the same metrics, step for step, as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cesar_jax import config as config_lib
from cesar_jax.checkpoints import manager as manager_lib
from cesar_jax.data import pipeline
from cesar_jax.data import records
from cesar_jax import metrics as metrics_lib
from cesar_jax import lora as lora_lib
from cesar_jax import model_store
from cesar_jax.models.audio_lm import TRAINABLE
from cesar_jax.parallel import mesh as mesh_lib
from cesar_jax.rl import optim

TrainState = dict  # {"params": nnx.State, "opt_state": optax state}
StepFn = Callable[[TrainState, int, jax.Array],
                  tuple[TrainState, Mapping[str, Any], Mapping[str, str] | None]]

# Metric keys that measure time: never compared between runs.
TIMING_PREFIXES = ("time/", "perf/")


# ---------------------------------------------------------------------------------------------
# Mesh, keys, host -> device.
# ---------------------------------------------------------------------------------------------


def make_mesh(mesh_section: Mapping[str, Any]) -> Mesh:
  """The ('data', 'fsdp', 'tensor') mesh of `config.mesh.shape` (one entry may be -1)."""
  return mesh_lib.make_mesh(tuple(int(s) for s in mesh_section["shape"]))


def step_key(base_key: jax.Array, step: int) -> jax.Array:
  """The key of step `step`: a pure function of (seed, step), so a resumed run draws the same."""
  return jax.random.fold_in(base_key, step)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def to_global(arrays: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Per-host numpy arrays (dim 0 = this host's rows) -> global arrays sharded on dim 0."""
  return mesh_lib.host_batch_to_global(dict(arrays), mesh)


def batch_shardings(tree: Any, mesh: Mesh) -> Any:
  """Leading dim sharded over ('data', 'fsdp') where it divides; scalars replicated."""
  return jax.tree.map(lambda x: replicated(mesh) if not x.shape
                      else mesh_lib.batch_sharding(mesh, x.shape), tree)


# ---------------------------------------------------------------------------------------------
# Train state.
# ---------------------------------------------------------------------------------------------


def has_adapters(params: nnx.State) -> bool:
  """Whether the state holds LoRA adapters (`nnx.LoRAParam`; static under jit)."""
  return any(isinstance(v, nnx.LoRAParam) for v in jax.tree.leaves(
      params, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def trainable_filter(params: nnx.State):
  """What the optimizer trains: the adapters if there are any, else `models.TRAINABLE`."""
  return nnx.LoRAParam if has_adapters(params) else TRAINABLE


def split_trainable(params: nnx.State) -> tuple[nnx.State, nnx.State]:
  """(trainable, frozen) parts of the model state (see `trainable_filter`)."""
  return nnx.split_state(params, trainable_filter(params), ...)


def checkpoint_view(state: TrainState) -> TrainState:
  """What a checkpoint holds: the whole state, or with adapters only the adapters (and their
  optimizer state): the frozen base is not written again at every save."""
  if not has_adapters(state["params"]):
    return state
  return {"params": split_trainable(state["params"])[0], "opt_state": state["opt_state"]}


def from_checkpoint_view(view: TrainState, state: TrainState) -> TrainState:
  """The train state from a restored `checkpoint_view` and the current (template) state."""
  if not has_adapters(state["params"]):
    return view
  _, frozen = split_trainable(state["params"])
  return {"params": merge_trainable(view["params"], frozen), "opt_state": view["opt_state"]}


def merge_trainable(trainable: nnx.State, frozen: nnx.State) -> nnx.State:
  return nnx.merge_state(trainable, frozen)


def state_shardings(state: TrainState, mesh: Mesh) -> Any:
  """NamedShardings of a train state (concrete or abstract) by the mesh rule table."""
  return {"params": mesh_lib.state_shardings(state["params"], mesh),
          "opt_state": mesh_lib.state_shardings(state["opt_state"], mesh)}


def init_train_state(params: nnx.State, tx: optax.GradientTransformation,
                     mesh: Mesh) -> tuple[TrainState, Any]:
  """The train state for `params` (already placed on `mesh`) and its shardings."""
  trainable, _ = split_trainable(params)
  abstract = {"params": params, "opt_state": jax.eval_shape(tx.init, trainable)}
  shardings = state_shardings(abstract, mesh)
  opt_state = jax.jit(tx.init, out_shardings=shardings["opt_state"])(trainable)
  return {"params": params, "opt_state": opt_state}, shardings


def apply_gradients(tx: optax.GradientTransformationExtraArgs, trainable: nnx.State,
                    opt_state: Any, grads: nnx.State, loss: jax.Array):
  """One optimizer update (skipped, bit for bit, when `loss` or a gradient is non-finite)."""
  updates, opt_state = tx.update(grads, opt_state, trainable, loss=loss)
  return optax.apply_updates(trainable, updates), opt_state


def minibatches(tree: Any, num: int) -> Any:
  """[R, ...] -> [num, R / num, ...], minibatch i taking rows i, i + num, i + 2 num, ...

  Strided, so that when rows are sharded in contiguous blocks over devices every minibatch
  takes the same number of rows from each device.
  """
  def split(x):
    if x.shape[0] % num:
      raise ValueError(f"cannot split {x.shape[0]} rows into {num} minibatches")
    return jnp.swapaxes(x.reshape((x.shape[0] // num, num) + x.shape[1:]), 0, 1)
  return jax.tree.map(split, tree)


def group_minibatches(tree: Any, num: int, group: int) -> Any:
  """Like `minibatches` for rollout rows [B * G, ...] grouped by prompt: minibatch i holds the
  G rollouts of prompts i, i + num, ... in the order of `minibatches` over the prompts."""
  def split(x):
    b = x.shape[0] // group
    if b % num:
      raise ValueError(f"cannot split {b} prompts into {num} minibatches")
    y = x.reshape((b // num, num, group) + x.shape[1:])
    return jnp.swapaxes(y, 0, 1).reshape((num, (b // num) * group) + x.shape[1:])
  return jax.tree.map(split, tree)


def mean_metrics(stacked: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """Per-minibatch metrics stacked on dim 0 -> one value each (min / max kept as such)."""
  out = {}
  for key, value in stacked.items():
    if key.endswith("/min"):
      out[key] = jnp.min(value)
    elif key.endswith("/max"):
      out[key] = jnp.max(value)
    else:
      out[key] = jnp.mean(value)
  return out


# ---------------------------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------------------------


class NamedSource:
  """A random-access source with a stable `repr`, optionally restricted to some indices.

  grain checks `repr(data_source)` when an iterator state is restored, so the repr must name
  the data, not an object address (a restarted process has other addresses).
  """

  def __init__(self, source, name: str, indices: Sequence[int] | None = None):
    self._source, self._name = source, name
    self._indices = None if indices is None else list(indices)

  def __len__(self) -> int:
    return len(self._source) if self._indices is None else len(self._indices)

  def __getitem__(self, i: int):
    return self._source[i if self._indices is None else self._indices[i]]

  def __repr__(self) -> str:
    return f"NamedSource({self._name!r}, {len(self)} records)"


def _synthetic_options(data: Mapping[str, Any]) -> dict[str, Any]:
  options = dict(data["synthetic"].items())
  if data["question_types"]:
    options["question_types"] = tuple(data["question_types"])
  if data["tasks"]:
    options["tasks"] = tuple(data["tasks"])
  return options


def _synthetic_source(data: Mapping[str, Any], split: str):
  """The synthetic set: generated in memory (`data.dir` = ""), or a tfds build cached there."""
  from cesar_jax.data import builders, synthetic  # pylint: disable=g-import-not-at-top
  options = _synthetic_options(data)
  n, seed = int(data["num_examples"]), int(data["seed"])
  if data["dir"]:
    digest = hashlib.sha1(json.dumps([n, seed, options], sort_keys=True, default=str).encode())
    cfg = builders.SyntheticConfig(name=f"n{n}-s{seed}-{digest.hexdigest()[:8]}",
                                   num_examples={split: n}, seed=seed, options=options,
                                   skip_bad_records=bool(data["skip_bad_records"]))
    builder = builders.prepare(builders.SyntheticBuilder(config=cfg, data_dir=data["dir"]))
    return builders.data_source(builder, split)
  name = f"synthetic/{split} (seed {seed})"
  report = records.BadRecordReport(file=name)
  recs = []
  for position, raw in enumerate(synthetic.generate(split, n, seed, **options)):
    report.total += 1
    try:
      recs.append(records.validate(builders.synthetic_record(raw, f"memory-seed{seed}"),
                                   check_audio=False))
    except (records.BadRecordError, KeyError, TypeError, ValueError) as e:
      if not isinstance(e, records.BadRecordError):
        e = records.BadRecordError(records.MALFORMED, f"{type(e).__name__}: {e}")
      records.check_or_count(e.located(file=name, record_id=records.raw_id(raw),
                                       position=position), report, bool(data["skip_bad_records"]))
  report.kept = len(recs)
  if report.skipped:
    report.log()
  return pipeline.RecordSource(recs)


def _describe(data: Mapping[str, Any], split: str) -> str:
  """What a source holds, for its repr: the data section's fields that select records."""
  fields = {k: data[k] for k in ("name", "dir", "num_examples", "question_types", "tasks",
                                 "seed")}
  if data["name"] == "synthetic":
    fields["synthetic"] = dict(data["synthetic"].items())
  return json.dumps({"split": split, **fields}, sort_keys=True, default=str)


def make_source(data: Mapping[str, Any], split: str | None = None):
  """A random-access source for `config.data` (synthetic, or a prepared benchmark folder)."""
  split = split or data["split"]
  name = _describe(data, split)
  if data["name"] == "synthetic":
    return NamedSource(_synthetic_source(data, split), name)
  if data["name"] not in ("mmau", "mmar", "avqa"):
    raise ValueError(f"config.data.name={data['name']!r}: one of synthetic, mmau, mmar, avqa")
  if not data["dir"]:
    raise ValueError(f"config.data.dir must name the prepared tfds folder of {data['name']} "
                     "(cesar_jax.data.builders.prepare(...).data_dir)")
  from cesar_jax.data import builders  # pylint: disable=g-import-not-at-top
  source = builders.data_source(data["dir"], split)
  keep = None
  if data["tasks"]:
    tasks = set(data["tasks"])
    keep = [i for i in range(len(source)) if _text(source[i]["task"]) in tasks]
    if not keep:
      raise ValueError(f"{data['dir']}/{split}: no record of tasks {sorted(tasks)}")
  return NamedSource(source, name, keep)


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def make_iterator(data: Mapping[str, Any], tokenizer, *, batch_size: int,
                  think_budget: int | None = None, source=None):
  """A checkpointable grain iterator of training batches (infinite, shuffled, per host).

  `batch_size` is the global number of prompts; each host reads `batch_size / processes`.
  """
  if batch_size % jax.process_count():
    raise ValueError(f"batch size {batch_size} is not divisible by the {jax.process_count()} "
                     "processes")
  cfg = pipeline.PipelineConfig(
      batch_size=batch_size // jax.process_count(), bucket_lengths=tuple(data["buckets"]),
      n_mels=int(data["n_mels"]), chunk_seconds=float(data["chunk_seconds"]),
      think_budget=think_budget, shuffle=True, seed=int(data["seed"]), num_epochs=None,
      drop_remainder=True, worker_count=int(data["worker_count"]))
  source = make_source(data) if source is None else source
  if len(source) < cfg.batch_size:
    raise ValueError(f"config.data: {len(source)} records are fewer than one batch "
                     f"({cfg.batch_size})")
  return iter(pipeline.make_loader(source, tokenizer, cfg))


def example_field(batch: Mapping[str, Any], key: str, row: int) -> Any:
  """A metadata field of a batch row: its own column (tfds) or inside `extra` (in memory)."""
  if key in batch:
    return batch[key][row]
  extra = batch.get("extra")
  if extra is not None and isinstance(extra[row], Mapping) and key in extra[row]:
    return extra[row][key]
  raise KeyError(f"batch row {row} (record {batch['id'][row]!r}) has no field {key!r}")


def check_features(data: Mapping[str, Any], model_config) -> None:
  if int(data["n_mels"]) != model_config.audio.num_mel_bins:
    raise ValueError(f"config.data.n_mels={data['n_mels']} but the model expects "
                     f"num_mel_bins={model_config.audio.num_mel_bins}")


# ---------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------


class Timer:
  """Wall-clock seconds of named phases (`with timer("sampling"): ...`)."""

  def __init__(self):
    self.seconds: dict[str, float] = {}

  def __call__(self, name: str):
    timer = self

    class _Phase:
      def __enter__(self):
        self.start = time.perf_counter()

      def __exit__(self, *exc):
        timer.seconds[name] = timer.seconds.get(name, 0.0) + time.perf_counter() - self.start

    return _Phase()

  def metrics(self) -> dict[str, float]:
    return {f"time/{k}": v for k, v in self.seconds.items()}


def train_loop(*, workdir: str, state: TrainState, iterator, step_fn: StepFn, total_steps: int,
               config: ml_collections.ConfigDict, console_keys: Sequence[str] | None = None,
               ) -> TrainState:
  """Runs `step_fn` from the last checkpoint to `total_steps` (see the module docstring).

  `iterator` is a grain iterator (`get_state` / `set_state`); `config` supplies seed,
  log_every, checkpoint_every, keep_checkpoints and the optim section, and is the checkpoint's
  metadata.
  """
  workdir = str(config_lib.workdir_path(workdir))  # orbax wants an absolute path or a URI
  ckpt = manager_lib.CheckpointManager(workdir, max_to_keep=int(config.keep_checkpoints),
                                       save_interval_steps=int(config.checkpoint_every))
  base_key = jax.random.key(int(config.seed))
  start = 0
  restored = ckpt.restore(checkpoint_view(state))
  if restored is not None:  # checkpoint `s` is saved after step s
    state, start = from_checkpoint_view(restored.state, state), restored.step + 1
    if restored.rng is not None:
      base_key = restored.rng
    if restored.data_state is not None:
      iterator.set_state(restored.data_state)
    logging.info("resuming from step %d of %d", start, total_steps)
  metadata = config.to_dict()
  writer = metrics_lib.MetricsWriter(workdir, total_steps=total_steps,
                                     resume_step=None if restored is None else restored.step,
                                     console_every=int(config.log_every),
                                     console_keys=console_keys)
  try:
    with manager_lib.PreemptionGuard() as guard:
      for step in range(start, total_steps):
        state, metrics, texts = step_fn(state, step, step_key(base_key, step))
        values = writer.write(step, metrics)
        if texts:
          writer.write_texts(step, texts)
        optim.check_consecutive_skips(int(values.get("optim/consecutive_skips", 0)),
                                      config.optim, step)
        stop = guard.should_stop()
        ckpt.save(step, checkpoint_view(state), rng=base_key, data_state=iterator.get_state(),
                  metadata=metadata, force=stop or step == total_steps - 1)
        if stop:
          logging.warning("stopped by a signal after step %d; checkpoint saved", step)
          break
  finally:
    ckpt.close()
    writer.close()
  return state


def check_batch_layout(mesh: Mesh, *, prompts: int, samples: int, grad_accum_steps: int,
                       prefix: str) -> None:
  """Start-up checks that every batch a step builds splits over the mesh and the processes.

  `prefix` names the config fields in the messages: ("data", "sampling", "grpo") for GRPO,
  ("sft", None, "sft") for SFT. A batch that does not divide is an error here, before any
  data is read, never a silent replication later.
  """
  batch_field, samples_field, accum_field = (f"config.{p}" if p else None for p in prefix)
  n = jax.process_count()
  if prompts % n:
    raise ValueError(f"{batch_field}.batch_size = {prompts} is not divisible by the {n} processes "
                     "(each reads batch_size / processes prompts)")
  mesh_lib.check_batch(prompts, mesh, f"{batch_field}.batch_size")
  if samples > 1:
    mesh_lib.check_batch(prompts * samples, mesh,
                         f"{batch_field}.batch_size * {samples_field}.num_samples")
  if prompts % grad_accum_steps:
    raise ValueError(f"{batch_field}.batch_size = {prompts} is not divisible by "
                     f"{accum_field}.grad_accum_steps = {grad_accum_steps}")
  if grad_accum_steps > 1:
    mesh_lib.check_batch(prompts // grad_accum_steps, mesh,
                         f"{batch_field}.batch_size / {accum_field}.grad_accum_steps (a minibatch)")


def start_policy(config: ml_collections.ConfigDict, workdir: str):
  """A run's mesh, tokenizer and starting policy (split), with the run files written.

  With `config.lora.rank > 0` the base loads in the compute dtype (it is frozen: no master
  copy) and fresh adapters are added in the master dtype (`model.param_dtype`), unless the
  starting point is a run that already has adapters. Returns (mesh, tokenizer, graphdef,
  params, model_config); shared by the `sft` and `grpo` jobs. Parameter dims the mesh cannot
  split (replicated instead) are logged once here.
  """
  mesh = make_mesh(config.mesh)
  tokenizer = model_store.load_tokenizer(config.tokenizer, config.init_from)
  section = config.get("lora")
  model = model_store.load_policy(config.init_from, config.model, mesh, tokenizer=tokenizer,
                                  seed=int(config.seed))
  if lora_lib.enabled(section):
    model_store.add_adapters(model, section, mesh, seed=int(config.seed),
                             master=jnp.dtype(config.model.get("param_dtype", "float32")))
  model_store.write_run_files(workdir, model.config, tokenizer)
  check_features(config.data, model.config)
  graphdef, params = nnx.split(model)
  if jax.process_index() == 0:
    for line in mesh_lib.replicated_dims(params, mesh):
      logging.info("replicated parameter dim: %s", line)
  return mesh, tokenizer, graphdef, params, model.config


def is_cast(x: Any, dtype: Any) -> bool:
  """Whether `cast_params` copies this leaf (array or ShapeDtypeStruct): floating, in another
  dtype than the compute `dtype`."""
  return jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != jnp.dtype(dtype)


def cast_params(params: Any, dtype: Any, shardings: Any) -> Any:
  """The compute-dtype view of master parameters, on the same shardings: floating leaves in
  another dtype are cast (one jitted copy); every other leaf IS the master array, so a frozen
  base already in the compute dtype (LoRA) is never copied."""
  dtype = jnp.dtype(dtype)
  leaves, treedef = jax.tree.flatten(params)
  cast = [i for i, x in enumerate(leaves) if is_cast(x, dtype)]
  if not cast:
    return params
  targets = treedef.flatten_up_to(shardings)
  copies = _cast_fn(dtype.name, tuple(targets[i] for i in cast))(tuple(leaves[i] for i in cast))
  for i, x in zip(cast, copies):
    leaves[i] = x
  return jax.tree.unflatten(treedef, leaves)


_CAST_FNS: dict[Any, Any] = {}


def _cast_fn(dtype: str, shardings: tuple[Any, ...]):
  key = (dtype, shardings)
  if key not in _CAST_FNS:
    _CAST_FNS[key] = jax.jit(lambda xs: tuple(x.astype(dtype) for x in xs),
                             out_shardings=shardings)
  return _CAST_FNS[key]
