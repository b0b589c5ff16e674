"""One metrics writer, four sinks: console line, progress bar, TensorBoard, `metrics.jsonl`.

    writer = MetricsWriter(workdir, total_steps=cfg.total_steps, resume_step=restored_step)
    for step in ...:
      writer.write(step, {"loss": loss, "reward/total": r, ...})   # scalars (jax or python)
    writer.close()

* console: a compact line every `console_every` steps (`step 12/100 | loss 0.1234 | ...`),
  printed through tqdm so it does not break the bar;
* progress bar: tqdm over the steps, with the time per step;
* TensorBoard: event files in `WORKDIR/tensorboard` (tensorboardX, no TensorFlow needed);
* `WORKDIR/metrics.jsonl`: one JSON object per write, `{"step": 12, "loss": 0.1234, ...}`.

The workdir may be a local folder or a URI (`gs://bucket/run`): every file goes through
`etils.epath`.

Resuming: pass the restored checkpoint step as `resume_step` (None on a fresh start). Lines of
`metrics.jsonl` for later steps (written after that checkpoint, before the interruption) are
dropped, and TensorBoard is told to purge its events from `resume_step + 1` on, so both read as an
uninterrupted run. Non-finite values are written as JSON `NaN` / `Infinity` (Python's json and
pandas read them). Only process 0 writes; on the others every method is a no-op.
"""

from __future__ import annotations

import collections
import json
import os
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import tqdm
from absl import logging
from etils import epath

JSONL_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class _EpathEventFile:
  """tensorboardX's event-file writer for URI workdirs (gs://, s3://) through epath.

  tensorboardX's own gs:// writer needs google-cloud-storage and re-uploads the whole file at
  every flush; this streams through the same fsspec filesystem as every other workdir file.
  """

  def __init__(self, path: str):
    self._file = epath.Path(path).open("wb")

  def write(self, data: bytes) -> None:
    self._file.write(data)

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None


class _EpathEventFileFactory:
  def open(self, path: str) -> _EpathEventFile:
    return _EpathEventFile(path)

  def directory_check(self, path: str) -> None:
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def _register_uri_event_writers() -> None:
  from tensorboardX import record_writer  # pylint: disable=g-import-not-at-top
  for scheme in ("gs", "s3"):
    record_writer.register_writer_factory(scheme, _EpathEventFileFactory())


def _scalar(key: str, value: Any, step: int) -> int | float:
  """A python int/float from a jax/numpy/python scalar; errors name the key and step."""
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(f"metrics at step {step}: {key!r} must be a scalar, got shape {array.shape}")
  item = array.reshape(()).item()
  if isinstance(item, bool):
    return int(item)
  if not isinstance(item, (int, float)):
    raise ValueError(f"metrics at step {step}: {key!r} must be a number, got {type(item).__name__}")
  return item


def truncate_jsonl(path: str | os.PathLike, last_step: int | None) -> int:
  """Keeps the lines of a metrics.jsonl with `step <= last_step` (none when None); atomic.

  A line that does not parse (a write cut short by a crash) is dropped with a warning.
  Returns the number of lines kept.
  """
  path = epath.Path(path)
  if not path.exists():
    return 0
  kept, dropped = [], 0
  with path.open() as f:
    for lineno, line in enumerate(f, 1):
      try:
        step = json.loads(line)["step"]
      except (json.JSONDecodeError, KeyError, TypeError):
        logging.warning("%s:%d: dropping an unreadable metrics line", path, lineno)
        dropped += 1
        continue
      if last_step is not None and step <= last_step:
        kept.append(line if line.endswith("\n") else line + "\n")
      else:
        dropped += 1
  tmp = path.parent / f"{path.name}.tmp"
  tmp.write_text("".join(kept))
  tmp.replace(path)
  if dropped:
    logging.info("%s: kept %d lines up to step %s, dropped %d", path, len(kept), last_step, dropped)
  return len(kept)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  with epath.Path(path).open() as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricsWriter:
  """Writes a step's scalar metrics to the console, a tqdm bar, TensorBoard and metrics.jsonl."""

  def __init__(
      self,
      workdir: str | os.PathLike,
      *,
      total_steps: int | None = None,
      resume_step: int | None = None,
      console_every: int = 1,
      console_keys: Sequence[str] | None = None,
      progress: bool = True,
      tensorboard: bool = True,
      is_chief: bool | None = None,
  ):
    """
    Args:
      workdir: the run's directory (created if needed).
      total_steps: the bar's and the console line's total.
      resume_step: the restored checkpoint step; None on a fresh start (drops all old lines).
      console_every: print a console line every this many steps (0: never).
      console_keys: the keys shown on the console (all when None); the other sinks get all.
      progress: show a tqdm bar.
      tensorboard: write TensorBoard event files.
      is_chief: whether this process writes; default `jax.process_index() == 0`.
    """
    self.is_chief = jax.process_index() == 0 if is_chief is None else is_chief
    self.workdir = epath.Path(workdir)
    self.jsonl_path = self.workdir / JSONL_NAME
    self._console_every = console_every
    self._console_keys = None if console_keys is None else tuple(console_keys)
    self._total = total_steps
    self._last_step: int | None = resume_step
    self._last_time: float | None = None
    self._jsonl = self._tb = self._bar = None
    if not self.is_chief:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    kept = truncate_jsonl(self.jsonl_path, resume_step)
    if "://" in os.fspath(self.jsonl_path):
      # Object stores cannot append: the object is rewritten, kept lines first (it appears
      # when the writer closes).
      old = self.jsonl_path.read_text() if kept else ""
      self._jsonl = self.jsonl_path.open("w")
      self._jsonl.write(old)
    else:
      self._jsonl = self.jsonl_path.open("a")
    if tensorboard:
      import tensorboardX  # pylint: disable=g-import-not-at-top

      purge_step = 0 if resume_step is None else resume_step + 1
      _register_uri_event_writers()
      self._tb = tensorboardX.SummaryWriter(
          os.fspath(self.workdir / TENSORBOARD_DIR), purge_step=purge_step, flush_secs=10,
          # tensorboardX names files by the second: a restart within it would overwrite.
          filename_suffix=f".{time.time_ns()}")
    if progress:
      initial = 0 if resume_step is None else resume_step + 1
      self._bar = tqdm.tqdm(total=total_steps, initial=initial, unit="step", dynamic_ncols=True,
                            file=sys.stderr)

  def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, int | float]:
    """Writes one step's scalars; returns them as python numbers. `step` must not go back."""
    if self._last_step is not None and step < self._last_step:
      raise ValueError(f"metrics step {step} is before the last written step {self._last_step}")
    if "step" in metrics:
      raise ValueError(f"metrics at step {step}: 'step' is reserved")
    # One transfer for all the device scalars; a list keeps the caller's key order.
    fetched = jax.device_get(list(metrics.values()))
    values = {k: _scalar(k, v, step) for k, v in zip(metrics, fetched)}
    now = time.perf_counter()
    if self._last_time is not None and self._last_step is not None and step > self._last_step:
      values["perf/seconds_per_step"] = (now - self._last_time) / (step - self._last_step)
    self._last_time, self._last_step = now, step
    if not self.is_chief:
      return values
    self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for key, value in values.items():
        self._tb.add_scalar(key, value, global_step=step)
    if self._bar is not None:
      self._bar.update(step + 1 - self._bar.n)
    if self._console_every and step % self._console_every == 0:
      tqdm.tqdm.write(self.format_line(step, values), file=sys.stdout)
    return values

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    """Text (e.g. sampled completions) to TensorBoard's text tab."""
    if self.is_chief and self._tb is not None:
      for key, text in texts.items():
        self._tb.add_text(key, text, global_step=step)

  def format_line(self, step: int, values: Mapping[str, int | float]) -> str:
    keys = self._console_keys if self._console_keys is not None else list(values)
    total = f"/{self._total}" if self._total else ""
    parts = [f"step {step}{total}"]
    for key in keys:
      if key in values:
        value = values[key]
        parts.append(f"{key} {value}" if isinstance(value, int) else f"{key} {value:.4g}")
    return " | ".join(parts)

  def flush(self) -> None:
    if self._jsonl is not None:
      self._jsonl.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._tb is not None:
      self._tb.close()
    if self._jsonl is not None:
      self._jsonl.close()
    self._jsonl = self._tb = self._bar = None

  def __enter__(self) -> MetricsWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _records(path: str) -> list[bytes]:
  """The records of a TFRecord file (u64 length, u32 crc, data, u32 crc); CRCs not checked."""
  out = []
  with epath.Path(path).open("rb") as f:
    while header := f.read(12):
      if len(header) < 12:
        break
      (length,) = struct.unpack("<Q", header[:8])
      data = f.read(length)
      f.read(4)
      if len(data) < length:
        break  # a record cut short by a crash
      out.append(data)
  return out


def read_tensorboard_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} from the event files of `logdir`, as TensorBoard shows them.

  Reads without TensorFlow or TensorBoard; applies purges (a session START at step s drops the
  earlier files' events at steps >= s), as after a resume.
  """
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top

  logdir = epath.Path(logdir)
  scalars: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)
  files = sorted(p.name for p in logdir.iterdir() if "tfevents" in p.name)
  # "events.out.tfevents.<10-digit seconds>.<host>.<ns>": sorted = chronological per host.
  for name in files:
    for record in _records(logdir / name):
      event = event_pb2.Event.FromString(record)
      if event.HasField("session_log") and event.session_log.status == event.session_log.START:
        for tag in scalars:
          scalars[tag] = [(s, v) for s, v in scalars[tag] if s < event.step]
      if event.HasField("summary"):
        for value in event.summary.value:
          if value.HasField("simple_value"):
            scalars[value.tag].append((event.step, value.simple_value))
  return dict(scalars)
