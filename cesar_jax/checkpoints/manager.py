"""Training checkpoints in the workdir (orbax), and a SIGTERM guard for preemptible machines.

One checkpoint per saved step, under `WORKDIR/checkpoints/<step>/`, holds four items:

* `state`: the training pytree (parameters, optimizer state, anything else: any dtype, bf16
  included, sharded arrays written by every host and restored onto the template's shardings);
* `train`: JSON with the step and the RNG key (`jax.random.key_data` + the key's impl name);
* `data`: the data iterator's state, one file per process (`process_<i>-of-<n>.json`), since each
  host reads its own shard (grain's `get_state()`: bytes, str or a JSON-able dict);
* `metadata`: JSON chosen by the caller (the run's config).

Orbax writes a step to `<step>.orbax-checkpoint-tmp-<ts>` and renames it only once every item is
on disk, so a save interrupted by preemption is never restored: `restore()` sees only finalized
steps and takes the latest. Typical loop:

    ckpt = CheckpointManager(workdir, max_to_keep=3, save_interval_steps=100)
    restored = ckpt.restore(state)              # None on a fresh start
    with PreemptionGuard() as guard:
      for step in range(start, total):
        ...
        stop = guard.should_stop()
        ckpt.save(step, state, rng=rng, data_state=it.get_state(), metadata=cfg, force=stop)
        if stop:
          break
    ckpt.close()                               # waits for an async save to finish
"""

from __future__ import annotations

import base64
import dataclasses
import json
import signal
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

_STATE, _TRAIN, _DATA, _METADATA = "state", "train", "data", "metadata"


# ---------------------------------------------------------------------------------------------
# Per-process data-iterator state (an orbax item).
# ---------------------------------------------------------------------------------------------


def _encode_data_state(data_state: bytes | str | Mapping[str, Any]) -> str:
  if isinstance(data_state, bytes):
    try:  # grain's DataLoader iterator state is UTF-8 JSON bytes: keep it readable.
      return json.dumps({"kind": "bytes_utf8", "value": data_state.decode("utf-8")})
    except UnicodeDecodeError:
      return json.dumps({"kind": "bytes_b64", "value": base64.b64encode(data_state).decode()})
  if isinstance(data_state, str):
    return json.dumps({"kind": "str", "value": data_state})
  return json.dumps({"kind": "json", "value": data_state})


def _decode_data_state(text: str, where: str) -> bytes | str | dict[str, Any]:
  record = json.loads(text)
  kind, value = record.get("kind"), record.get("value")
  if kind == "bytes_utf8":
    return value.encode("utf-8")
  if kind == "bytes_b64":
    return base64.b64decode(value)
  if kind in ("str", "json"):
    return value
  raise ValueError(f"{where}: unknown data-state kind {kind!r}")


class DataStateHandler(ocp.CheckpointHandler):
  """Writes this process's data-iterator state as `process_<i>-of-<n>.json` (like grain's)."""

  def _path(self, directory: epath.Path) -> epath.Path:
    return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

  def save(self, directory: epath.Path, args: DataStateSave):
    self._path(directory).write_text(_encode_data_state(args.item))

  def restore(self, directory: epath.Path, args: DataStateRestore | None = None):
    path = self._path(directory)
    if not path.exists():
      raise FileNotFoundError(
          f"{path} does not exist: the checkpoint was written by a different number of processes "
          f"than the {jax.process_count()} restoring it")
    return _decode_data_state(path.read_text(), str(path))

  def metadata(self, directory: epath.Path):
    return None

  def finalize(self, directory: epath.Path):
    pass

  def close(self):
    pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
  item: bytes | str | Mapping[str, Any]


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
  pass


# ---------------------------------------------------------------------------------------------
# RNG keys <-> JSON.
# ---------------------------------------------------------------------------------------------


def _rng_to_json(rng: jax.Array) -> dict[str, Any]:
  if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    data, impl = jax.random.key_data(rng), str(jax.random.key_impl(rng))
  else:  # a legacy raw uint32 key
    data, impl = rng, None
  data = np.asarray(jax.device_get(data))
  return {"impl": impl, "dtype": str(data.dtype), "shape": list(data.shape),
          "data": data.reshape(-1).tolist()}


def _rng_from_json(record: Mapping[str, Any]) -> jax.Array:
  data = np.asarray(record["data"], dtype=record["dtype"]).reshape(record["shape"])
  if record["impl"] is None:
    return jax.numpy.asarray(data)
  return jax.random.wrap_key_data(data, impl=record["impl"])


# ---------------------------------------------------------------------------------------------
# The manager.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Restored:
  """What `CheckpointManager.restore` gives back."""
  step: int
  state: Any  # same structure, dtypes and shardings as the template
  rng: jax.Array | None
  data_state: bytes | str | dict[str, Any] | None  # pass to `iterator.set_state(...)`
  metadata: dict[str, Any]


def _as_abstract(template: Any) -> Any:
  """Concrete or abstract template -> ShapeDtypeStructs carrying the shardings to restore onto."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, template)


class CheckpointManager:
  """orbax.CheckpointManager over `workdir/checkpoints` with the four items above."""

  def __init__(
      self,
      workdir: str | epath.PathLike,
      *,
      max_to_keep: int | None = 3,
      save_interval_steps: int = 1,
      async_save: bool = True,
      subdir: str = "checkpoints",
  ):
    self.directory = epath.Path(workdir) / subdir
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        save_interval_steps=save_interval_steps,
        enable_async_checkpointing=async_save,
        create=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    """Finalized steps on disk (uncommitted temporary directories are not steps)."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, step: int) -> bool:
    return self._manager.should_save(step)

  def save(
      self,
      step: int,
      state: Any,
      *,
      rng: jax.Array | None = None,
      data_state: bytes | str | Mapping[str, Any] | None = None,
      metadata: Mapping[str, Any] | None = None,
      force: bool = False,
  ) -> bool:
    """Saves `step` if on the save interval (`step % interval == 0`), or if it is the first save
    of this manager (orbax's initial-save policy), or with `force`, unless `step` is already
    saved. Returns whether it saved. `metadata` must be JSON-able (a ConfigDict is converted).

    With async saving, arrays are copied off device before this returns and written in the
    background; `wait_until_finished()` / `close()` block until the step is finalized.
    """
    if step in self._manager.all_steps():  # e.g. a final save right after an interval save
      return False
    if hasattr(metadata, "to_dict"):  # an ml_collections.ConfigDict
      metadata = metadata.to_dict()
    items = {
        _STATE: ocp.args.StandardSave(state),
        _TRAIN: ocp.args.JsonSave(
            {"step": int(step), "rng": None if rng is None else _rng_to_json(rng)}),
        _METADATA: ocp.args.JsonSave(dict(metadata or {})),
    }
    if data_state is not None:
      items[_DATA] = DataStateSave(data_state)
    saved = self._manager.save(step, args=ocp.args.Composite(**items), force=force)
    if saved:
      logging.info("Saving checkpoint step %d to %s", step, self.directory)
    return saved

  def restore(self, template: Any, step: int | None = None) -> Restored | None:
    """Restores `step` (default: the latest finalized one), or None when there is none.

    Args:
      template: a pytree like the saved state (concrete arrays or ShapeDtypeStructs, e.g. from
        `nnx.eval_shape`); its dtypes and shardings are the ones restored onto.
      step: a specific step; it must exist.
    """
    if step is None:
      step = self.latest_step()
      if step is None:
        return None
    elif step not in self.all_steps():
      raise FileNotFoundError(
          f"no finalized checkpoint for step {step} in {self.directory}; have {self.all_steps()}")
    step_dir = self.directory / str(step)
    items = {
        _STATE: ocp.args.StandardRestore(_as_abstract(template)),
        _TRAIN: ocp.args.JsonRestore(),
        _METADATA: ocp.args.JsonRestore(),
    }
    has_data = (step_dir / _DATA).exists()
    if has_data:
      items[_DATA] = DataStateRestore()
    try:
      out = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:
      raise RuntimeError(f"could not restore checkpoint {step_dir}: {e}") from e
    rng_record = out[_TRAIN].get("rng")
    logging.info("Restored checkpoint step %d from %s", step, self.directory)
    return Restored(
        step=int(out[_TRAIN]["step"]),
        state=out[_STATE],
        rng=None if rng_record is None else _rng_from_json(rng_record),
        data_state=out[_DATA] if has_data else None,
        metadata=dict(out[_METADATA]),
    )

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves, then releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> CheckpointManager:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# ---------------------------------------------------------------------------------------------
# Preemption.
# ---------------------------------------------------------------------------------------------


class PreemptionGuard:
  """Turns SIGTERM (TPU / spot preemption notice) into a flag the training loop polls.

  The handler only sets a flag: the loop finishes its step, saves (force=True), waits for the
  save and exits cleanly. With several processes, `should_stop()` is a collective: every process
  must call it at the same step, and all stop if any one was signalled. Install from the main
  thread (Python's rule for signal handlers); the previous handlers come back on `uninstall()`.
  """

  def __init__(self, signals: Iterable[int] = (signal.SIGTERM,)):
    self._signals = tuple(signals)
    self._event = threading.Event()
    self._previous: dict[int, Any] = {}
    self.received: int | None = None

  def _handle(self, signum, frame) -> None:
    del frame
    self.received = signum
    self._event.set()

  def install(self) -> PreemptionGuard:
    for sig in self._signals:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def uninstall(self) -> None:
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous.clear()

  @property
  def requested(self) -> bool:
    """This process received a signal."""
    return self._event.is_set()

  def should_stop(self) -> bool:
    """Whether any process received a signal (a collective when process_count() > 1)."""
    flag = self.requested
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      flag = bool(np.any(multihost_utils.process_allgather(np.array(flag))))
    if flag:
      logging.warning("Preemption signal received: saving and stopping.")
    return flag

  def __enter__(self) -> PreemptionGuard:
    return self.install()

  def __exit__(self, *exc) -> None:
    self.uninstall()
