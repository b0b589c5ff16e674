"""A quiet console: absl / orbax / jax INFO logs go to `WORKDIR/log.txt`, not to the terminal.

Without this, a run's console is mostly orbax INFO lines (CheckpointManager options, temporary
directory renames, metadata writes: several per checkpoint), which bury the progress bar, the
metrics lines and the results. `cesar_jax.main` calls `setup(workdir)` once, after
`jax.distributed` has started:

* every log record at the absl verbosity (INFO by default) is appended to `WORKDIR/log.txt`
  (process 0) or `WORKDIR/log.process_<i>.txt` (process i > 0 of a multi-process run);
* the console still gets WARNING and above, and everything the code prints itself (the tqdm
  bar, the metrics lines, stage headers, results);
* absl's own flags bring the logs back: an explicit `--verbosity=0` (or `-v 0`; `-v 1` adds
  DEBUG) prints them on the console as well, `--alsologtostderr` too, `--stderrthreshold=info`
  picks the console's level, and `--logtostderr` prints them on the console only (no file).

It works through absl's handler (which orbax, jax and this package log through): its stream
becomes the log file and its `stderrthreshold` the console's level, so absl's semantics hold.
The file is opened through `etils.epath`, as all workdir I/O is.
"""

from __future__ import annotations

import dataclasses
import io
from typing import IO

import jax
from absl import flags
from absl import logging
from etils import epath

LOG_NAME = "log.txt"
# absl's --verbosity (an int) -> the level name --stderrthreshold takes.
_THRESHOLDS = {1: "debug", 0: "info", -1: "warning", -2: "error", -3: "fatal"}


def log_name(process_index: int, process_count: int) -> str:
  """`log.txt` for process 0 (and single-process runs), `log.process_<i>.txt` for the others."""
  if process_index == 0 or process_count == 1:
    return LOG_NAME
  return f"log.process_{process_index}.txt"


def console_threshold(verbosity: int | None) -> str:
  """The console's level: WARNING unless an explicit `--verbosity` asks for more (or less)."""
  if verbosity is None:
    return "warning"
  return _THRESHOLDS[max(-3, min(1, int(verbosity)))]


@dataclasses.dataclass
class LogFile:
  """What `setup` changed; `close()` puts the handler back (for tests and notebooks)."""
  path: epath.Path | None  # None with --logtostderr
  threshold: str  # the console's level
  _stream: IO[str] | None = None
  _previous_stream: IO[str] | None = None
  _previous_threshold: str | None = None

  def close(self) -> None:
    handler = logging.get_absl_handler().python_handler
    if self._stream is not None:
      handler.flush()
      handler.stream = self._previous_stream
      self._stream.close()
      self._stream = None
    if self._previous_threshold is not None:
      flags.FLAGS.stderrthreshold = self._previous_threshold
      self._previous_threshold = None


def _flag_present(name: str) -> bool:
  return name in flags.FLAGS and bool(flags.FLAGS[name].present)


def setup(workdir: str | epath.PathLike, *, verbosity: int | None = None) -> LogFile:
  """Sends absl logging to the workdir's log file and WARNING+ to the console (see above).

  Args:
    workdir: the run's directory (created if needed).
    verbosity: the console's absl verbosity (0 = INFO, 1 = DEBUG, -1 = WARNING); default: the
      command line's `--verbosity` if it was given explicitly, else WARNING only. (What reaches
      the file is absl's verbosity, set by the flag.)

  Returns:
    The LogFile (its path, the console level); `close()` undoes the set-up.

  absl flags must be parsed (they are under `absl.app.run` and in the tests' conftest).
  """
  if not flags.FLAGS.is_parsed():
    raise RuntimeError("cesar_jax.logs.setup: absl flags are not parsed yet (call it from a "
                       "function run by absl.app.run, or call flags.FLAGS.mark_as_parsed())")
  logging.use_absl_handler()  # a no-op under app.run; makes the handler the root's otherwise
  if verbosity is None and _flag_present("verbosity"):
    verbosity = flags.FLAGS.verbosity
  previous_threshold = flags.FLAGS.stderrthreshold
  if _flag_present("stderrthreshold"):
    threshold = previous_threshold
  else:
    threshold = console_threshold(verbosity)
    flags.FLAGS.stderrthreshold = threshold
  result = LogFile(path=None, threshold=threshold, _previous_threshold=previous_threshold)
  if flags.FLAGS.logtostderr:  # absl's "console only": keep it
    return result
  handler = logging.get_absl_handler().python_handler
  handler.flush()
  previous_stream = handler.stream
  # Asking for the process index may start the backends, which log at INFO ("Unable to
  # initialize backend 'tpu'"): hold those records until the file is open.
  handler.stream = held = io.StringIO()
  try:
    path = epath.Path(workdir) / log_name(jax.process_index(), jax.process_count())
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = path.open("a")
  except BaseException:
    handler.stream = previous_stream
    previous_stream.write(held.getvalue())
    raise
  stream.write(held.getvalue())
  result.path, result._stream, result._previous_stream = path, stream, previous_stream
  handler.stream = stream
  logging.info("logging to %s; console level %s", path, threshold)
  return result
