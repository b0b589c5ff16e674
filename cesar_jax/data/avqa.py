"""AVQA in R1-AQA's format -> `records.Record`s.

R1-AQA (xiaomi-research/r1-aqa, README) converts AVQA's `train_qa.json` to one JSON object a
line: id, video_name ("-HG3Omg_89c_000030"), video_id, question_text, multi_choice (4
options), answer (the index of the correct option), question_relation, question_type, and
optionally dataset_name and audio_path (its wavs are named "-HG3Omg_89c_30.wav"). AVQA's own
JSON list with the same fields is read too.

Mapping: `answer` = multi_choice[answer]; `task` = "sound" (the clips are VGGSound's);
`category` = question_relation; `sub_category` = question_type; `difficulty` = "".
As R1-AQA does, "video" in the question becomes "audio" (`video_to_audio`), since the model
only hears the clip.

Audio: the item's `audio_path` when it has one (relative to `audio_dir`; an absolute path
that does not exist is looked up by file name in `audio_dir`), else `<video_name>.wav`, then
R1-AQA's `<youtube id>_<start seconds>.wav`, then `.flac` of both, in `audio_dir`.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Iterable, Mapping

from cesar_jax.data import records

SOURCE = "avqa"
DEFAULT_VERSION = "r1-aqa"
_MAPPED = ("id", "question_text", "multi_choice", "answer", "question_relation",
           "question_type", "audio_path")
_START_SUFFIX = re.compile(r"^(.*)_(\d+)$")


def audio_candidates(raw: Mapping[str, Any]) -> list[str]:
  """File names to try for an item, in order (see the module docstring)."""
  path = raw.get("audio_path")
  if isinstance(path, str) and path:
    return [path, os.path.basename(path)]
  name = records.require(raw, "video_name")
  stems = [name]
  m = _START_SUFFIX.match(name)
  if m:
    stems.append(f"{m.group(1)}_{int(m.group(2))}")
  return [f"{s}{ext}" for ext in (".wav", ".flac") for s in stems]


def parse(raw: Mapping[str, Any], *, audio_dir: str, version: str,
          video_to_audio: bool = True) -> records.Record:
  rid = str(records.require(raw, "id", (str, int)))
  choices = records.require_choices(raw, "multi_choice")
  index = records.require(raw, "answer", int)
  if isinstance(index, bool):
    raise records.BadRecordError(records.MALFORMED, f"answer must be an index, got {index!r}")
  if not choices:
    raise records.BadRecordError(records.EMPTY_CHOICES, "multi_choice is empty")
  if not 0 <= index < len(choices):
    raise records.BadRecordError(
        records.ANSWER_NOT_IN_CHOICES,
        f"answer index {index} is outside multi_choice (length {len(choices)})")
  question = records.require(raw, "question_text")
  if video_to_audio:
    question = question.replace("video", "audio")
  category, _ = records.join_category(raw.get("question_relation", ""))
  sub_category, _ = records.join_category(raw.get("question_type", ""))
  return records.Record(
      id=rid, question=question, choices=choices, answer=choices[index], task="sound",
      category=category, sub_category=sub_category, difficulty="", source=SOURCE,
      version=version,
      audio_path=records.resolve_audio_path(audio_dir, audio_candidates(raw)),
      extra={k: v for k, v in raw.items() if k not in _MAPPED} | {"answer_index": index},
  )


def read_items(path: str) -> Iterable[Any]:
  """A JSON list file, or JSON lines (R1-AQA's `.data`/`.jsonl`)."""
  with open(path, encoding="utf-8") as f:
    head = f.read(4096).lstrip()
  if head.startswith("["):
    with open(path, encoding="utf-8") as f:
      try:
        return json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
  return records.read_jsonl(path)


def read(path: str | os.PathLike, audio_dir: str | os.PathLike | None = None, *,
         version: str = DEFAULT_VERSION, video_to_audio: bool = True,
         skip_bad_records: bool = False, check_audio: bool = True) -> records.Loaded:
  """Reads an AVQA question file; `audio_dir` (default: its folder) holds the wavs."""
  path = os.fspath(path)
  audio_dir = os.fspath(audio_dir) if audio_dir is not None else os.path.dirname(path)
  return records.collect(
      read_items(path),
      lambda raw: parse(raw, audio_dir=audio_dir, version=version,
                        video_to_audio=video_to_audio),
      file=path, skip_bad_records=skip_bad_records, check_audio=check_audio)
