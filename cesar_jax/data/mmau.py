"""MMAU test-mini (Sakshi113/MMAU): its JSON list -> `records.Record`s.

Fields: id, audio_id ("./test-mini-audios/<id>.wav", relative to the dataset root), question,
choices, answer (the option text), dataset, task, split, category (a list for 13 items),
sub-category, difficulty. The 2025-05-15 revision changed about a quarter of the items, so
every record carries its version (`VERSIONS`); it is read from the file name
(`mmau-test-mini-v05.15.25.json`) or passed as `version=`, never guessed otherwise.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

from cesar_jax.data import records

SOURCE = "mmau"
VERSIONS = ("v05.15.25", "v2024")  # the 2025-05-15 revision, and the original release
_VERSION_IN_NAME = re.compile(r"test-mini-(v[0-9][\w.]*?)\.json$")
_MAPPED = ("id", "audio_id", "question", "choices", "answer", "task", "category",
           "sub-category", "difficulty")


def version_from_path(path: str | os.PathLike) -> str | None:
  m = _VERSION_IN_NAME.search(os.path.basename(path))
  return m.group(1) if m else None


def parse(raw: Mapping[str, Any], *, audio_dir: str, version: str) -> records.Record:
  """One MMAU item -> Record (audio resolved under `audio_dir`, not opened)."""
  rid = str(records.require(raw, "id", (str, int)))
  audio_id = records.require(raw, "audio_id")
  category, category_list = records.join_category(records.require(raw, "category", (str, list)))
  extra = records.extra_fields(raw, _MAPPED, category_list)
  return records.Record(
      id=rid,
      question=records.require(raw, "question"),
      choices=records.require_choices(raw, "choices"),
      answer=records.require(raw, "answer"),
      task=records.require(raw, "task"),
      category=category,
      sub_category=records.require(raw, "sub-category"),
      difficulty=records.require(raw, "difficulty"),
      source=SOURCE,
      version=version,
      audio_path=records.resolve_audio_path(audio_dir, [audio_id, os.path.basename(audio_id)]),
      extra=extra,
  )


def read(json_path: str | os.PathLike, audio_dir: str | os.PathLike | None = None, *,
         version: str | None = None, skip_bad_records: bool = False,
         check_audio: bool = True) -> records.Loaded:
  """Reads an MMAU test-mini JSON file.

  Args:
    json_path: e.g. `mmau-test-mini-v05.15.25.json`.
    audio_dir: the folder holding `test-mini-audios/` (or the audio files themselves);
      defaults to the JSON file's folder.
    version: the MMAU version; defaults to the one in the file name, else an error.
    skip_bad_records: skip and count bad records (see `records.collect`) instead of raising.
    check_audio: check each audio file exists and is readable (off to read metadata only).
  """
  json_path = os.fspath(json_path)
  version = version or version_from_path(json_path)
  if not version:
    raise ValueError(f"{json_path}: cannot tell the MMAU version from the file name; pass "
                     f"version= (known: {VERSIONS})")
  audio_dir = os.fspath(audio_dir) if audio_dir is not None else os.path.dirname(json_path)
  return records.collect(records.read_json_list(json_path), lambda raw: parse(raw, audio_dir=audio_dir, version=version),
                         file=json_path, skip_bad_records=skip_bad_records,
                         check_audio=check_audio)
