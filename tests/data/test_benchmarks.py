"""Readers of MMAU / MMAR / AVQA metadata into records, and bad-input handling."""

import collections
import json
import os

import numpy as np
import pytest
import soundfile

from cesar_jax.data import avqa
from cesar_jax.data import mmar
from cesar_jax.data import mmau
from cesar_jax.data import records

MMAU_FILES = {"v05.15.25": "mmau-test-mini-v05.15.25.json", "v2024": "mmau-test-mini-v2024.json"}


# The real metadata (shared/data/benchmarks, no audio).


@pytest.mark.parametrize("version", sorted(MMAU_FILES))
def test_mmau_all_items_missing_audio_is_reported(shared_dir, tmp_path, version):
  path = shared_dir / "data" / "benchmarks" / MMAU_FILES[version]
  with pytest.raises(records.BadRecordError) as info:
    mmau.read(path, tmp_path)
  e = info.value
  assert e.reason == records.MISSING_AUDIO and e.file == str(path)
  first_id = json.loads(path.read_text())[0]["id"]
  assert str(path) in str(e) and repr(first_id) in str(e) and "#0" in str(e)
  assert f"test-mini-audios/{first_id}.wav: audio file not found" in str(e)

  loaded = mmau.read(path, tmp_path, skip_bad_records=True)
  assert loaded.records == []
  assert loaded.report.total == 1000 and loaded.report.kept == 0
  assert loaded.report.counts == {records.MISSING_AUDIO: 1000}


@pytest.mark.parametrize("version", sorted(MMAU_FILES))
def test_mmau_metadata_loads_all_items(shared_dir, version):
  path = shared_dir / "data" / "benchmarks" / MMAU_FILES[version]
  loaded = mmau.read(path, "/audio/root", check_audio=False)
  recs = loaded.records
  assert len(recs) == 1000 and loaded.report.skipped == 0
  assert {r.version for r in recs} == {version} and {r.source for r in recs} == {"mmau"}
  assert collections.Counter(r.task for r in recs) == {"sound": 333, "music": 334, "speech": 333}
  assert all(r.answer in r.choices for r in recs)
  r0 = recs[0]
  assert r0.audio_path == f"/audio/root/test-mini-audios/{r0.id}.wav"
  assert r0.extra == {"dataset": "AudioSet", "split": "test-mini"}
  # The 13 items whose category is a list: joined into a string, the list kept in extra.
  listed = [r for r in recs if "category_list" in r.extra]
  assert len(listed) == 13
  assert all(r.category == "Reasoning" and r.extra["category_list"] == ["Reasoning"]
             for r in listed)
  assert all(isinstance(r.category, str) for r in recs)


def test_mmau_v05_15_25_counts_and_the_8_choice_item(shared_dir):
  path = shared_dir / "data" / "benchmarks" / MMAU_FILES["v05.15.25"]
  recs = mmau.read(path, check_audio=False).records
  assert collections.Counter(r.difficulty for r in recs) == {"easy": 224, "medium": 540,
                                                             "hard": 236}
  assert collections.Counter(len(r.choices) for r in recs) == {4: 948, 2: 27, 5: 24, 8: 1}
  (eight,) = [r for r in recs if len(r.choices) == 8]
  assert eight.id == "7a1dcecc-d303-4759-940b-5d02d2a8c77e"
  assert eight.answer == "A motorsport racing event" == eight.choices[3]


def test_mmar_all_items(shared_dir, tmp_path):
  path = shared_dir / "data" / "benchmarks" / "MMAR-meta.jsonl"
  loaded = mmar.read(path, tmp_path, skip_bad_records=True)
  assert loaded.report.total == 1000 and loaded.report.counts == {records.MISSING_AUDIO: 1000}
  with pytest.raises(records.BadRecordError, match="qx8hrhBZJ98_00-01-32_00-02-02.*missing_audio"):
    mmar.read(path, tmp_path)

  recs = mmar.read(path, tmp_path, check_audio=False).records
  assert len(recs) == 1000 and len({r.id for r in recs}) == 1000
  r0 = recs[0]
  assert (r0.id, r0.answer, r0.task, r0.category, r0.sub_category, r0.difficulty) == (
      "qx8hrhBZJ98_00-01-32_00-02-02", "Open Grassland", "music", "Cultural Layer",
      "Professional Knowledge and Reasoning", "")
  assert r0.audio_path == str(tmp_path / "audio" / f"{r0.id}.wav")
  assert r0.extra["source"] == "youtube" and r0.extra["cue"][0] == "Throat Singing"
  assert collections.Counter(len(r.choices) for r in recs) == {4: 815, 2: 171, 3: 10, 5: 3,
                                                               6: 1}


def test_mmau_version_must_be_named(tmp_path):
  path = tmp_path / "mmau-test-mini.json"
  path.write_text("[]")
  with pytest.raises(ValueError, match="pass version="):
    mmau.read(path)
  assert mmau.read(path, version="v2024").records == []


# Bad input, on small hand-written files.


def _mmau_item(i: int, **changes) -> dict:
  item = {"id": f"id{i}", "audio_id": f"./test-mini-audios/id{i}.wav", "question": "What?",
          "choices": ["dog", "cat"], "answer": "dog", "dataset": "x", "task": "sound",
          "split": "test-mini", "category": "Reasoning", "sub-category": "s",
          "difficulty": "easy"}
  item.update(changes)
  return {k: v for k, v in item.items() if v is not None}


def _write_audio(root, names):
  os.makedirs(root, exist_ok=True)
  for name in names:
    soundfile.write(os.path.join(root, name), np.zeros(800, np.float32), 16_000)


BAD_CASES = {
    records.MISSING_AUDIO: ({}, "id1.wav: audio file not found"),
    records.UNREADABLE_AUDIO: ({}, "id1.wav: cannot read audio header"),
    records.MALFORMED: ({"question": None}, "missing field 'question'"),
    records.ANSWER_NOT_IN_CHOICES: ({"answer": "cow"}, "answer 'cow' is not one of"),
    records.EMPTY_CHOICES: ({"choices": []}, "the choice list is empty"),
}


def _bad_mmau_file(tmp_path, reason):
  changes, _ = BAD_CASES[reason]
  items = [_mmau_item(0), _mmau_item(1, **changes), _mmau_item(2)]
  _write_audio(tmp_path / "test-mini-audios", ["id0.wav", "id2.wav"])
  if reason != records.MISSING_AUDIO:
    if reason == records.UNREADABLE_AUDIO:
      (tmp_path / "test-mini-audios" / "id1.wav").write_bytes(b"not a wav" * 20)
    else:
      _write_audio(tmp_path / "test-mini-audios", ["id1.wav"])
  path = tmp_path / "mmau-test-mini-v2024.json"
  path.write_text(json.dumps(items))
  return path


@pytest.mark.parametrize("reason", sorted(BAD_CASES))
def test_bad_record_raises_naming_file_and_id(tmp_path, reason):
  path = _bad_mmau_file(tmp_path, reason)
  with pytest.raises(records.BadRecordError) as info:
    mmau.read(path)
  e = info.value
  assert (e.reason, e.file, e.record_id, e.position) == (reason, str(path), "id1", 1)
  assert str(e).startswith(f"{path}: record 'id1' (#1): {reason}: ")
  assert BAD_CASES[reason][1] in str(e)


@pytest.mark.parametrize("reason", sorted(BAD_CASES))
def test_bad_record_is_counted_when_skipping(tmp_path, reason):
  path = _bad_mmau_file(tmp_path, reason)
  loaded = mmau.read(path, skip_bad_records=True)
  assert [r.id for r in loaded.records] == ["id0", "id2"]
  assert loaded.report.counts == {reason: 1}
  assert (loaded.report.total, loaded.report.kept, loaded.report.skipped) == (3, 2, 1)
  assert "record 'id1' (#1)" in loaded.report.examples[reason][0]
  assert f"{reason}=1" in str(loaded.report)


def test_several_reasons_are_counted_separately(tmp_path):
  items = [_mmau_item(0), _mmau_item(1, answer="x"), _mmau_item(2, choices=[]),
           _mmau_item(3, answer="y"), "not an object", _mmau_item(0)]
  _write_audio(tmp_path / "test-mini-audios", [f"id{i}.wav" for i in range(4)])
  path = tmp_path / "m.json"
  path.write_text(json.dumps(items))
  loaded = mmau.read(path, version="v2024", skip_bad_records=True)
  assert [r.id for r in loaded.records] == ["id0"]
  assert loaded.report.counts == {records.ANSWER_NOT_IN_CHOICES: 2, records.EMPTY_CHOICES: 1,
                                  records.MALFORMED: 1, records.DUPLICATE_ID: 1}


def test_mmar_unparsable_line_and_audio_dir_of_files(tmp_path):
  item = {"id": "a", "audio_path": "./audio/a.wav", "question": "q", "choices": ["x", "y"],
          "answer": "y", "modality": "sound", "category": "Signal Layer",
          "sub-category": "s", "language": None}
  path = tmp_path / "MMAR-meta.jsonl"
  path.write_text(json.dumps(item) + "\n{broken\n\n" + json.dumps(item | {"id": "b"}) + "\n")
  _write_audio(tmp_path / "flat", ["a.wav", "b.wav"])  # the files themselves, no audio/
  with pytest.raises(records.BadRecordError, match=r"MMAR-meta.jsonl: record #1: malformed: "
                     "line 2 is not JSON"):
    mmar.read(path, tmp_path / "flat")
  loaded = mmar.read(path, tmp_path / "flat", skip_bad_records=True)
  assert [r.id for r in loaded.records] == ["a", "b"]
  assert loaded.records[0].audio_path == str(tmp_path / "flat" / "a.wav")
  assert loaded.report.counts == {records.MALFORMED: 1}


def test_avqa_r1_aqa_format(tmp_path):
  items = [
      {"id": 183, "video_name": "-HG3Omg_89c_000030", "video_id": 341,
       "question_text": "What happened in the video?",
       "multi_choice": ["motorboat", "Yacht consignment", "Sailboat set sail",
                        "Consignment car"],
       "answer": 1, "question_relation": "View", "question_type": "Happening"},
      {"id": 184, "video_name": "abc_000010", "video_id": 342, "question_text": "Which?",
       "multi_choice": ["a", "b", "c", "d"], "answer": 3, "question_relation": "Both",
       "question_type": "Which", "dataset_name": "AVQA", "audio_path": "/elsewhere/clip.wav"},
      {"id": 185, "video_name": "zzz_000001", "question_text": "?",
       "multi_choice": ["a", "b"], "answer": 2},
  ]
  path = tmp_path / "train.data"
  path.write_text("\n".join(json.dumps(i) for i in items))
  _write_audio(tmp_path / "wavs", ["-HG3Omg_89c_30.wav", "clip.wav", "zzz_000001.wav"])

  with pytest.raises(records.BadRecordError, match=r"record '185' \(#2\): answer_not_in_choices: "
                     "answer index 2 is outside multi_choice"):
    avqa.read(path, tmp_path / "wavs")
  loaded = avqa.read(path, tmp_path / "wavs", skip_bad_records=True)
  assert loaded.report.counts == {records.ANSWER_NOT_IN_CHOICES: 1}
  first, second = loaded.records
  assert (first.id, first.answer, first.question, first.category, first.sub_category) == (
      "183", "Yacht consignment", "What happened in the audio?", "View", "Happening")
  assert first.audio_path == str(tmp_path / "wavs" / "-HG3Omg_89c_30.wav")
  assert second.answer == "d" and second.audio_path == str(tmp_path / "wavs" / "clip.wav")
  assert first.extra["video_id"] == 341 and first.extra["answer_index"] == 1

  # AVQA's own JSON list is read too.
  list_path = tmp_path / "train_qa.json"
  list_path.write_text(json.dumps(items[:1]))
  (rec,) = avqa.read(list_path, tmp_path / "wavs", video_to_audio=False).records
  assert rec.question == "What happened in the video?"
