"""tfds builders (array_record files) for the synthetic set, MMAU, MMAR and AVQA.

TensorFlow is not installed: build with `prepare(builder)` and read with `data_source(...)`
(`as_data_source`, never `as_dataset`). The builders live outside a tfds package, so each
`_info` builds its `tfds.core.DatasetInfo` itself.

Every dataset has the same features (`feature_spec()`): the fields of `records.Record` with the
audio decoded at build time to float32 16 kHz mono (`audio_io`, so the pipeline never
resamples), `extra` as a JSON string, and `index`, the record's position in generation
order. tfds returns records in key-hash order, not generation order: sort by `index` where
order matters. The synthetic set adds `events` (JSON string), `trace`, `corruption` and
`rewordings`.

Where the data is: benchmark builders take a `BenchmarkConfig` (split name -> metadata
file, the audio folder); the synthetic builder a `SyntheticConfig` (examples per split,
seed, generator options). Bad records raise `records.BadRecordError`, or with
`skip_bad_records=True` are counted; the counts are logged and stored in the dataset's
metadata (`builder.info.metadata["bad_records"][split]`).

  builder = prepare(MmauBuilder(config=BenchmarkConfig(
      name="v05.15.25", splits={"test": ".../mmau-test-mini-v05.15.25.json"},
      audio_dir=".../MMAU"), data_dir=DATA_DIR))
  source = data_source(builder, "test")   # or data_source(builder.data_dir, "test")
  record = example_to_record(source[0])
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from typing import Any, Callable, Iterator, Mapping

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from cesar_jax.data import audio_io
from cesar_jax.data import avqa
from cesar_jax.data import mmar
from cesar_jax.data import mmau
from cesar_jax.data import records

_TEXT_FIELDS = ("id", "question", "answer", "task", "category", "sub_category", "difficulty",
                "source", "version", "audio_path")
SYNTHETIC_FIELDS = ("events", "trace", "corruption", "rewordings")


def feature_spec(synthetic: bool = False) -> tfds.features.FeaturesDict:
  """The tfds features of every dataset (`synthetic` adds the synthetic set's own)."""
  spec = {
      "index": np.int64,
      "audio": tfds.features.Tensor(shape=(None,), dtype=np.float32,
                                    encoding=tfds.features.Encoding.BYTES),
      "choices": tfds.features.Sequence(tfds.features.Text()),
      "extra": tfds.features.Text(),  # JSON object
      **{k: tfds.features.Text() for k in _TEXT_FIELDS},
  }
  if synthetic:
    spec.update(events=tfds.features.Text(),  # JSON list of event dicts
                trace=tfds.features.Text(), corruption=tfds.features.Text(),
                rewordings=tfds.features.Sequence(tfds.features.Text()))
  return tfds.features.FeaturesDict(spec)


def _json_default(value: Any) -> Any:
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  raise TypeError(f"{type(value).__name__} is not JSON-serialisable: {value!r}")


def to_json(value: Any) -> str:
  return json.dumps(value, default=_json_default, ensure_ascii=False)


def record_to_example(record: records.Record, index: int, audio: np.ndarray, *,
                      synthetic: bool = False) -> dict[str, Any]:
  """A Record (audio decoded separately) -> the tfds example.

  With `synthetic`, the fields of `SYNTHETIC_FIELDS` move from `extra` to their own features.
  """
  example = {k: getattr(record, k) for k in _TEXT_FIELDS}
  extra = dict(record.extra)
  if synthetic:
    example.update({k: extra.pop(k) for k in SYNTHETIC_FIELDS})
    example["events"] = to_json(example["events"])
    example["rewordings"] = list(example["rewordings"])
  example.update(index=index, audio=np.asarray(audio, np.float32),
                 choices=list(record.choices), extra=to_json(extra))
  return example


def _str(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def decode_example(example: Mapping[str, Any]) -> dict[str, Any]:
  """A tfds example as read (bytes, numpy) -> plain Python values (str, list, dict).

  `extra` and `events` are parsed from JSON; `audio` stays float32[N]; `index` is an int.
  """
  out = {}
  for key, value in example.items():
    if key == "audio":
      out[key] = np.asarray(value, np.float32)
    elif key == "index":
      out[key] = int(value)
    elif key in ("choices", "rewordings"):
      out[key] = [_str(v) for v in value]
    elif key in ("extra", "events"):
      out[key] = json.loads(_str(value))
    else:
      out[key] = _str(value)
  return out


def example_to_record(example: Mapping[str, Any]) -> records.Record:
  """A tfds example (raw or decoded) -> Record; synthetic fields go back into `extra`."""
  ex = decode_example(example) if not isinstance(example.get("id"), str) else dict(example)
  extra = dict(ex.get("extra", {}))
  for k in SYNTHETIC_FIELDS:
    if k in ex:
      extra[k] = ex[k]
  fields = {k: ex[k] for k in _TEXT_FIELDS}
  return records.Record(choices=tuple(ex["choices"]), audio=ex["audio"], extra=extra,
                        **fields)


@dataclasses.dataclass(eq=False)
class BenchmarkConfig(tfds.core.BuilderConfig):
  """A benchmark's local files.

  Attributes:
    splits: split name -> metadata file (e.g. {"test": ".../MMAR-meta.jsonl"}).
    audio_dir: the audio folder (default: each metadata file's folder); see each reader.
    skip_bad_records: count and skip bad records instead of raising.
    reader_options: more keyword arguments of the reader (MMAU `version`, AVQA
      `video_to_audio`, ...).
  """
  splits: Mapping[str, str] = dataclasses.field(default_factory=dict)
  audio_dir: str | None = None
  skip_bad_records: bool = False
  reader_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder defined outside a tfds package.

  tfds finds a builder's code folder through `importlib_resources` (not installed) unless
  it is told: the folder is this file's (no checksums file there: no downloads).
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))


def _store_report(builder: tfds.core.GeneratorBasedBuilder, split: str,
                  report: records.BadRecordReport) -> None:
  report.log()
  builder.info.metadata.setdefault("bad_records", {})[split] = report.as_dict()


class _BenchmarkBuilder(_LocalBuilder, skip_registration=True):
  """Reads metadata with `READER`, decodes each audio file, writes array_record files."""
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [BenchmarkConfig(name="default")]
  READER: Callable[..., records.Loaded]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=feature_spec(),
                                 metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager  # local files only
    cfg = self.builder_config
    if not cfg.splits:
      raise ValueError(f"{self.name}: BenchmarkConfig(splits=...) names no metadata file")
    return {split: self._generate_examples(split, path) for split, path in cfg.splits.items()}

  def _generate_examples(self, split: str, path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    cfg = self.builder_config
    loaded = type(self).READER(path, cfg.audio_dir, skip_bad_records=cfg.skip_bad_records,
                               **cfg.reader_options)
    report, index = loaded.report, 0
    for record in loaded.records:
      try:
        audio = audio_io.load_audio(record.audio_path)
      except audio_io.AudioError as e:
        reason = (records.MISSING_AUDIO if isinstance(e, audio_io.MissingAudioError)
                  else records.UNREADABLE_AUDIO)
        records.check_or_count(
            records.BadRecordError(reason, str(e), file=path, record_id=record.id), report,
            cfg.skip_bad_records)
        continue
      yield index, record_to_example(record, index, audio)
      index += 1
    report.kept = index
    _store_report(self, split, report)


class MmauBuilder(_BenchmarkBuilder):
  """MMAU test-mini; name the config after the version (see `mmau.VERSIONS`)."""
  name = "mmau"
  READER = staticmethod(mmau.read)


class MmarBuilder(_BenchmarkBuilder):
  name = "mmar"
  READER = staticmethod(mmar.read)


class AvqaBuilder(_BenchmarkBuilder):
  """AVQA in R1-AQA's format (`avqa.read`); e.g. splits={"train": ..., "validation": ...}."""
  name = "avqa"
  READER = staticmethod(avqa.read)


def _default_generate(split: str, num_examples: int, seed: int, **options):
  from cesar_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic.generate(split, num_examples, seed, **options)


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
  """The synthetic set: examples per split, seed, generator options.

  `generate_fn(split, num_examples, seed, **options)` defaults to
  `cesar_jax.data.synthetic.generate`; tests inject a small one.
  """
  num_examples: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {"train": 1024, "test": 256})
  seed: int = 0
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  generate_fn: Callable[..., Any] | None = None
  skip_bad_records: bool = False


class SyntheticBuilder(_LocalBuilder):
  """The procedural audio-reasoning set of `cesar_jax.data.synthetic`."""
  name = "synthetic_aqa"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      SyntheticConfig(name="tiny", num_examples={"train": 64, "test": 32}),
      SyntheticConfig(name="small", num_examples={"train": 1024, "test": 256}),
      SyntheticConfig(name="default", num_examples={"train": 16384, "test": 1024}),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=feature_spec(synthetic=True),
                                 metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split, n)
            for split, n in self.builder_config.num_examples.items()}

  def _generate_examples(self, split: str, num_examples: int):
    cfg = self.builder_config
    generate = cfg.generate_fn or _default_generate
    name = f"synthetic[{cfg.name}]/{split}"
    report, index = records.BadRecordReport(file=name), 0
    for position, raw in enumerate(generate(split, num_examples, cfg.seed, **cfg.options)):
      report.total += 1
      try:
        record = records.validate(synthetic_record(raw, synthetic_version(cfg)),
                                  check_audio=False)
      except (records.BadRecordError, KeyError, TypeError, ValueError) as e:
        if not isinstance(e, records.BadRecordError):
          e = records.BadRecordError(records.MALFORMED, f"{type(e).__name__}: {e}")
        records.check_or_count(
            e.located(file=name, record_id=records.raw_id(raw), position=position), report,
            cfg.skip_bad_records)
        continue
      yield index, record_to_example(record, index, record.audio, synthetic=True)
      index += 1
    report.kept = index
    _store_report(self, split, report)


def synthetic_version(config: SyntheticConfig) -> str:
  """The `version` of synthetic records: the config's name and seed, e.g. "tiny-seed0"."""
  return f"{config.name}-seed{config.seed}"


def synthetic_record(raw: Mapping[str, Any], version: str) -> records.Record:
  """A dict from `synthetic.generate` -> Record (synthetic fields in `extra`)."""
  category, _ = records.join_category(raw.get("category", ""))
  extra = {k: raw[k] for k in raw if k not in _TEXT_FIELDS + ("audio", "choices")}
  for k, default in (("events", []), ("trace", ""), ("corruption", "none"), ("rewordings", [])):
    extra.setdefault(k, default)
  return records.Record(
      id=str(records.require(raw, "id", (str, int))),
      question=records.require(raw, "question"),
      choices=records.require_choices(raw, "choices"),
      answer=records.require(raw, "answer"),
      task=str(raw.get("task", "")), category=category,
      sub_category=str(raw.get("sub_category", "")),
      difficulty=str(raw.get("difficulty", "")), source="synthetic", version=version,
      audio=np.asarray(records.require(raw, "audio", (np.ndarray, list)), np.float32),
      extra=extra)


def prepare(builder: tfds.core.DatasetBuilder) -> tfds.core.DatasetBuilder:
  """Builds the array_record files (no-op when already built); returns the builder."""
  builder.download_and_prepare(file_format="array_record")
  return builder


def data_source(builder_or_dir: tfds.core.DatasetBuilder | str | os.PathLike, split: str):
  """A random-access source of examples (tfds `as_data_source`), from a builder or its folder.

  The folder is `builder.data_dir` (`DATA_DIR/<name>/<config>/<version>`); reading it needs
  no builder class and no source files.
  """
  if isinstance(builder_or_dir, (str, os.PathLike)):
    builder_or_dir = tfds.builder_from_directory(os.fspath(builder_or_dir))
  return builder_or_dir.as_data_source(split=split)
