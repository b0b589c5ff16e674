"""The one record schema every dataset is read into, its validation, and bad-record counting.

A `Record` is one multiple-choice audio question:

  id            str, unique within its file
  question      str
  choices       tuple[str, ...], at least one; kept as given (MMAU has items whose options
                repeat, and one with 8 options)
  answer        str, the correct option's text; must be one of `choices`
  task          str: MMAU "sound" | "music" | "speech"; MMAR its `modality`
                ("speech", "mix-sound-speech", ...); AVQA "sound"; synthetic its task
  category      str. MMAU has 13 items whose category is a list (all `["Reasoning"]`): a list
                is joined with " | " so per-category accuracy groups them with the plain
                strings, and the list as given is kept in `extra["category_list"]`.
  sub_category  str ("" when the dataset has none)
  difficulty    str ("easy" | "medium" | "hard"; "" when the dataset has none)
  source        str, the dataset: "mmau" | "mmar" | "avqa" | "synthetic"
  version       str, the dataset version (MMAU: "v05.15.25" or "v2024"; always named)
  audio_path    str, the resolved audio file ("" when `audio` is given)
  audio         float32[N] 16 kHz mono, or None (then it is decoded from `audio_path`)
  extra         dict of the dataset's other fields (JSON-serialisable), kept unchanged

Bad input never passes silently. `collect` turns raw items into records and validates them;
each problem is a `BadRecordError` whose message names the file, the record id and its
position, and the reason (one of `REASONS`). With `skip_bad_records=True` the record is
skipped and counted by reason in a `BadRecordReport`, which is returned and logged.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

from absl import logging
import numpy as np

from cesar_jax.data import audio_io

MALFORMED = "malformed"
EMPTY_CHOICES = "empty_choices"
ANSWER_NOT_IN_CHOICES = "answer_not_in_choices"
MISSING_AUDIO = "missing_audio"
UNREADABLE_AUDIO = "unreadable_audio"
DUPLICATE_ID = "duplicate_id"
REASONS = (MALFORMED, EMPTY_CHOICES, ANSWER_NOT_IN_CHOICES, MISSING_AUDIO, UNREADABLE_AUDIO,
           DUPLICATE_ID)

CATEGORY_LIST_SEPARATOR = " | "


@dataclasses.dataclass(frozen=True, eq=False)
class Record:
  """One multiple-choice audio question (see the module docstring for each field)."""
  id: str
  question: str
  choices: tuple[str, ...]
  answer: str
  task: str = ""
  category: str = ""
  sub_category: str = ""
  difficulty: str = ""
  source: str = ""
  version: str = ""
  audio_path: str = ""
  audio: np.ndarray | None = None  # float32[N], 16 kHz mono
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def metadata(self) -> dict[str, Any]:
    """Every field except the audio samples (what a batch carries for rewards and eval)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "audio"}

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, Record):
      return NotImplemented
    if self.metadata() != other.metadata():
      return False
    if (self.audio is None) != (other.audio is None):
      return False
    return self.audio is None or np.array_equal(self.audio, other.audio)


class BadRecordError(ValueError):
  """A record that cannot be used; the message names file, record id, position and reason."""

  def __init__(self, reason: str, detail: str, *, file: str = "", record_id: str = "",
               position: int | None = None):
    if reason not in REASONS:
      raise ValueError(f"unknown bad-record reason {reason!r}; known: {REASONS}")
    self.reason, self.detail = reason, detail
    self.file, self.record_id, self.position = str(file), str(record_id), position
    super().__init__(self._message())

  def _message(self) -> str:
    where = f"#{self.position}" if self.position is not None else ""
    rec = f"record {self.record_id!r} ({where})" if self.record_id else f"record {where}"
    return f"{self.file or '<unknown file>'}: {rec}: {self.reason}: {self.detail}"

  def located(self, *, file: str, record_id: str, position: int | None) -> "BadRecordError":
    """The same error with the location filled in where it was unknown."""
    return BadRecordError(self.reason, self.detail, file=self.file or file,
                          record_id=self.record_id or record_id,
                          position=self.position if self.position is not None else position)


@dataclasses.dataclass
class BadRecordReport:
  """How many records of `file` were skipped, by reason, with the first few messages."""
  file: str
  total: int = 0  # records seen
  kept: int = 0
  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  max_examples: int = 3

  @property
  def skipped(self) -> int:
    return sum(self.counts.values())

  def add(self, error: BadRecordError) -> None:
    self.counts[error.reason] += 1
    shown = self.examples.setdefault(error.reason, [])
    if len(shown) < self.max_examples:
      shown.append(str(error))

  def as_dict(self) -> dict[str, Any]:
    return {"file": self.file, "total": self.total, "kept": self.kept,
            "skipped": self.skipped, "counts": dict(self.counts), "examples": self.examples}

  def __str__(self) -> str:
    if not self.skipped:
      return f"{self.file}: {self.kept} of {self.total} records kept, none skipped"
    by_reason = ", ".join(f"{r}={n}" for r, n in sorted(self.counts.items()))
    firsts = "; ".join(m[0] for m in self.examples.values())
    return (f"{self.file}: {self.kept} of {self.total} records kept, {self.skipped} skipped "
            f"({by_reason}); first of each: {firsts}")

  def log(self) -> None:
    (logging.warning if self.skipped else logging.info)("%s", self)


class Loaded(NamedTuple):
  records: list[Record]
  report: BadRecordReport


def join_category(category: Any) -> tuple[str, list[str] | None]:
  """A category as given -> (the str stored in the record, the list if it was one)."""
  if isinstance(category, (list, tuple)):
    if not all(isinstance(c, str) for c in category):
      raise BadRecordError(MALFORMED, f"category list holds non-strings: {category!r}")
    return CATEGORY_LIST_SEPARATOR.join(category), list(category)
  if category is None:
    return "", None
  if not isinstance(category, str):
    raise BadRecordError(MALFORMED, f"category must be a string or a list, got {category!r}")
  return category, None


def require(raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...] = str) -> Any:
  """`raw[key]`, or a `malformed` BadRecordError naming the missing or mistyped key."""
  if not isinstance(raw, Mapping):
    raise BadRecordError(MALFORMED, f"expected a JSON object, got {type(raw).__name__}")
  if key not in raw:
    raise BadRecordError(MALFORMED, f"missing field {key!r}")
  value = raw[key]
  if not isinstance(value, kind):
    raise BadRecordError(MALFORMED, f"field {key!r} has type {type(value).__name__}, "
                         f"expected {getattr(kind, '__name__', kind)}")
  return value


def require_choices(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
  choices = require(raw, key, (list, tuple))
  if not all(isinstance(c, str) for c in choices):
    raise BadRecordError(MALFORMED, f"field {key!r} holds non-strings: {choices!r}")
  return tuple(choices)


def resolve_audio_path(audio_dir: str | os.PathLike, candidates: Sequence[str]) -> str:
  """The first candidate that exists under `audio_dir` (absolute ones as they are), else the first.

  Readers pass the dataset's relative path first and its bare file name second, so
  `audio_dir` may be either the dataset root (holding e.g. `test-mini-audios/`) or the
  folder of audio files itself.
  """
  paths = [os.path.join(audio_dir, c) for c in candidates]  # join keeps absolute paths
  for p in paths:
    if os.path.isfile(p):
      return os.path.abspath(p)
  return os.path.abspath(paths[0])


def validate(record: Record, *, check_audio: bool = True) -> Record:
  """Raises BadRecordError (location filled in by `collect`) if `record` is unusable."""
  if not record.id:
    raise BadRecordError(MALFORMED, "empty id")
  if not record.choices:
    raise BadRecordError(EMPTY_CHOICES, "the choice list is empty")
  if record.answer not in record.choices:
    raise BadRecordError(ANSWER_NOT_IN_CHOICES,
                         f"answer {record.answer!r} is not one of {list(record.choices)!r}")
  if record.audio is not None:
    audio = np.asarray(record.audio)
    if audio.ndim != 1 or audio.size == 0 or not np.issubdtype(audio.dtype, np.floating):
      raise BadRecordError(UNREADABLE_AUDIO, "audio must be a non-empty float array [N], got "
                           f"{audio.dtype}{list(audio.shape)}")
  elif not record.audio_path:
    raise BadRecordError(MALFORMED, "no audio: neither samples nor a path")
  elif check_audio:
    try:
      audio_io.probe(record.audio_path)
    except audio_io.MissingAudioError as e:
      raise BadRecordError(MISSING_AUDIO, str(e)) from e
    except audio_io.UnreadableAudioError as e:
      raise BadRecordError(UNREADABLE_AUDIO, str(e)) from e
  return record


def raw_id(raw: Any) -> str:
  """The id of a raw item if it has one (for error messages about malformed items)."""
  if isinstance(raw, Mapping) and isinstance(raw.get("id"), (str, int)):
    return str(raw["id"])
  return ""


def check_or_count(error: BadRecordError, report: BadRecordReport | None,
                   skip_bad_records: bool) -> None:
  """Raises `error`, or counts it in `report` when skipping."""
  if not skip_bad_records or report is None:
    raise error
  report.add(error)


class Unparsable:
  """A line of a JSON-lines file that is not JSON; `collect` reports it as malformed."""

  def __init__(self, error: str):
    self.error = error


def read_json_list(path: str | os.PathLike) -> list[Any]:
  """The items of a file holding one JSON list (MMAU's format); errors name the file."""
  with open(path, encoding="utf-8") as f:
    try:
      items = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{os.fspath(path)}: not valid JSON: {e}") from e
  if not isinstance(items, list):
    raise ValueError(f"{os.fspath(path)}: expected a JSON list of items, got {type(items).__name__}")
  return items


def extra_fields(raw: Mapping[str, Any], mapped: Iterable[str],
                 category_list: list[str] | None) -> dict[str, Any]:
  """A raw item's fields that have no Record field, plus the category list when it was one."""
  extra = {k: v for k, v in raw.items() if k not in mapped}
  if category_list is not None:
    extra["category_list"] = category_list
  return extra


def read_jsonl(path: str | os.PathLike) -> Iterator[Any]:
  """The JSON values of a .jsonl file (blank lines skipped, bad lines as `Unparsable`)."""
  with open(path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        yield json.loads(line)
      except json.JSONDecodeError as e:
        yield Unparsable(f"line {line_number} is not JSON: {e}")


def collect(items: Iterable[Any], parse: Callable[[Any], Record], *, file: str,
            skip_bad_records: bool = False, check_audio: bool = True) -> Loaded:
  """Parses and validates raw items (JSON objects) into records.

  Args:
    items: the raw items in file order; the position of each is its index here.
    parse: raw item -> Record; raises BadRecordError for dataset-specific problems
      (KeyError / TypeError / ValueError from it count as `malformed`).
    file: the metadata file, for messages.
    skip_bad_records: skip and count bad records instead of raising.
    check_audio: check that each audio file exists and has a readable header.
  Returns:
    the kept records, and the report (also logged).
  """
  report = BadRecordReport(file=str(file))
  records, seen = [], set()
  for position, raw in enumerate(items):
    report.total += 1
    rid = raw_id(raw)
    try:
      try:
        if isinstance(raw, Unparsable):
          raise BadRecordError(MALFORMED, raw.error)
        record = validate(parse(raw), check_audio=check_audio)
      except BadRecordError:
        raise
      except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise BadRecordError(MALFORMED, f"{type(e).__name__}: {e}") from e
      if record.id in seen:
        raise BadRecordError(DUPLICATE_ID, f"id {record.id!r} appeared earlier in the file")
    except BadRecordError as e:
      check_or_count(e.located(file=str(file), record_id=rid, position=position), report,
                     skip_bad_records)
      continue
    seen.add(record.id)
    records.append(record)
  report.kept = len(records)
  report.log()
  return Loaded(records, report)
