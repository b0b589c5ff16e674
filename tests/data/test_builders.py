"""tfds builders: build to a temporary folder, read every record back through a data source."""

import json

import numpy as np
import pytest
import soundfile

from cesar_jax.data import audio_io
from cesar_jax.data import builders
from cesar_jax.data import mmau
from cesar_jax.data import records


def fake_generate(split, num_examples, seed, **options):
  """A stand-in for `synthetic.generate` with the same record contract."""
  rng = np.random.default_rng([seed, len(split)])
  for i in range(num_examples):
    choices = ["one", "two", "three"]
    yield {
        "id": f"{split}-{seed}-{i}",
        "audio": rng.standard_normal(400 + 37 * i).astype(np.float32),
        "question": f"How many beeps? {options.get('suffix', '')}".strip(),
        "choices": choices, "answer": choices[i % 3], "task": "count",
        "category": "counting", "sub_category": "beeps", "difficulty": "easy",
        "events": [{"label": "beep", "onset": 0.25 * i, "pitch_hz": np.float32(440.0)}],
        "trace": f"<think>I hear {i % 3 + 1}.</think><answer>{choices[i % 3]}</answer>",
        "corruption": "none" if i % 2 else "rambling",
        "rewordings": [] if i % 2 else ["Count the beeps."],
    }


def _by_index(source):
  examples = [builders.decode_example(source[i]) for i in range(len(source))]
  assert sorted(e["index"] for e in examples) == list(range(len(examples)))
  return [builders.example_to_record(e) for e in sorted(examples, key=lambda e: e["index"])]


def test_synthetic_round_trip(tmp_path):
  config = builders.SyntheticConfig(name="t", num_examples={"train": 7, "test": 3}, seed=5,
                                    options={"suffix": "(listen)"}, generate_fn=fake_generate)
  builder = builders.prepare(builders.SyntheticBuilder(config=config, data_dir=tmp_path))
  for split, n in (("train", 7), ("test", 3)):
    expected = [builders.synthetic_record(raw, "t-seed5")
                for raw in fake_generate(split, n, 5, suffix="(listen)")]
    # Read back from the folder alone (no builder class or config needed).
    got = _by_index(builders.data_source(builder.data_dir, split))
    assert len(got) == n
    for e, g in zip(expected, got):
      assert g.extra["events"] == [{"label": "beep", "onset": e.extra["events"][0]["onset"],
                                    "pitch_hz": 440.0}]
      e = records.Record(**{**e.metadata(), "audio": e.audio,
                            "extra": {**e.extra, "events": g.extra["events"]}})
      assert g == e, (g.id, e.id)
    assert got[0].question == "How many beeps? (listen)" and got[0].source == "synthetic"
  assert builder.info.metadata["bad_records"]["train"]["kept"] == 7


def test_synthetic_bad_records_are_counted_in_metadata(tmp_path):
  def generate(split, n, seed):
    for i, raw in enumerate(fake_generate(split, n, seed)):
      if i == 1:
        raw["answer"] = "four"
      if i == 2:
        del raw["question"]
      yield raw

  config = builders.SyntheticConfig(name="bad", num_examples={"train": 5}, generate_fn=generate)
  with pytest.raises(records.BadRecordError, match=r"synthetic\[bad\]/train: record 'train-0-1' "
                     r"\(#1\): answer_not_in_choices"):
    builders.prepare(builders.SyntheticBuilder(config=config, data_dir=tmp_path / "a"))

  config = builders.SyntheticConfig(name="bad", num_examples={"train": 5}, generate_fn=generate,
                                    skip_bad_records=True)
  builder = builders.prepare(builders.SyntheticBuilder(config=config, data_dir=tmp_path / "b"))
  report = builder.info.metadata["bad_records"]["train"]
  assert report["counts"] == {"answer_not_in_choices": 1, "malformed": 1}
  assert (report["total"], report["kept"]) == (5, 3)
  source = builders.data_source(builder.data_dir, "train")
  assert sorted(builders.decode_example(source[i])["id"] for i in range(3)) == [
      "train-0-0", "train-0-3", "train-0-4"]
  # The counts are stored with the dataset.
  reread = json.loads((builder.data_path / "metadata.json").read_text())
  assert reread["bad_records"]["train"]["skipped"] == 2


def test_mmau_builder_decodes_audio_and_counts_bad_audio(tmp_path):
  root = tmp_path / "MMAU"
  (root / "test-mini-audios").mkdir(parents=True)
  rng = np.random.default_rng(0)
  items = []
  for i in range(4):
    items.append({"id": f"m{i}", "audio_id": f"./test-mini-audios/m{i}.wav", "question": "q",
                  "choices": ["a", "b"], "answer": "b", "dataset": "d", "task": "music",
                  "split": "test-mini", "category": ["Reasoning"] if i == 0 else "Perception",
                  "sub-category": "s", "difficulty": "hard"})
    if i != 2:  # m2's audio is missing
      soundfile.write(root / "test-mini-audios" / f"m{i}.wav",
                      rng.uniform(-0.5, 0.5, (22_050 + 100 * i, 2)), 22_050)
  path = root / "mmau-test-mini-v05.15.25.json"
  path.write_text(json.dumps(items))

  config = builders.BenchmarkConfig(name="v05.15.25", splits={"test": str(path)},
                                    skip_bad_records=True)
  builder = builders.prepare(builders.MmauBuilder(config=config, data_dir=tmp_path / "tfds"))
  assert builder.info.metadata["bad_records"]["test"]["counts"] == {"missing_audio": 1}

  got = _by_index(builders.data_source(builder, "test"))
  expected = mmau.read(path, skip_bad_records=True).records
  assert [g.id for g in got] == ["m0", "m1", "m3"]
  for g, e in zip(got, expected):
    assert g.metadata() == e.metadata()
    np.testing.assert_array_equal(g.audio, audio_io.load_audio(e.audio_path))
  assert got[1].audio.shape == (round((22_050 + 100) * 16_000 / 22_050),)
  assert got[0].category == "Reasoning" and got[0].extra["category_list"] == ["Reasoning"]


def test_real_synthetic_generator_round_trip(tmp_path):
  synthetic = pytest.importorskip("cesar_jax.data.synthetic")
  config = builders.SyntheticConfig(name="real", num_examples={"train": 3}, seed=1)
  builder = builders.prepare(builders.SyntheticBuilder(config=config, data_dir=tmp_path))
  expected = [builders.synthetic_record(raw, "real-seed1")
              for raw in synthetic.generate("train", 3, 1)]
  got = _by_index(builders.data_source(builder.data_dir, "train"))
  assert len(got) == 3
  for e, g in zip(expected, got):
    # JSON keeps Python floats exactly; numpy scalars (if any) become Python numbers.
    e = records.Record(**{**e.metadata(), "audio": e.audio,
                          "extra": json.loads(builders.to_json(e.extra))})
    assert g == e, g.id
    assert g.extra["trace"].startswith("<think>") and g.audio.dtype == np.float32
