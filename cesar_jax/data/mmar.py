"""MMAR (`MMAR-meta.jsonl`, one JSON object a line) -> `records.Record`s.

Fields: id, audio_path ("./audio/<id>.wav", relative to the dataset root), question,
choices, answer, modality, category, sub-category, language, source, url, timestamp,
thinking, cue, rubric. MMAR has no task or difficulty: `task` is its modality ("speech",
"mix-sound-speech", ...), `difficulty` is "". Unmapped fields (MMAR's own `source`, the
rubric, ...) stay in `extra`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from cesar_jax.data import records

SOURCE = "mmar"
DEFAULT_VERSION = "MMAR-meta"  # MMAR has one release; the name of its metadata file
_MAPPED = ("id", "audio_path", "question", "choices", "answer", "modality", "category",
           "sub-category")


def parse(raw: Mapping[str, Any], *, audio_dir: str, version: str) -> records.Record:
  rid = str(records.require(raw, "id", (str, int)))
  audio_path = records.require(raw, "audio_path")
  category, category_list = records.join_category(records.require(raw, "category", (str, list)))
  extra = records.extra_fields(raw, _MAPPED, category_list)
  return records.Record(
      id=rid,
      question=records.require(raw, "question"),
      choices=records.require_choices(raw, "choices"),
      answer=records.require(raw, "answer"),
      task=records.require(raw, "modality"),
      category=category,
      sub_category=records.require(raw, "sub-category"),
      difficulty="",
      source=SOURCE,
      version=version,
      audio_path=records.resolve_audio_path(audio_dir,
                                            [audio_path, os.path.basename(audio_path)]),
      extra=extra,
  )


def read(jsonl_path: str | os.PathLike, audio_dir: str | os.PathLike | None = None, *,
         version: str = DEFAULT_VERSION, skip_bad_records: bool = False,
         check_audio: bool = True) -> records.Loaded:
  """Reads `MMAR-meta.jsonl`; `audio_dir` (default: its folder) holds `audio/` or the files."""
  jsonl_path = os.fspath(jsonl_path)
  audio_dir = os.fspath(audio_dir) if audio_dir is not None else os.path.dirname(jsonl_path)
  return records.collect(records.read_jsonl(jsonl_path),
                         lambda raw: parse(raw, audio_dir=audio_dir, version=version),
                         file=jsonl_path, skip_bad_records=skip_bad_records,
                         check_audio=check_audio)
