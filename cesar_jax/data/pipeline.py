"""grain input pipeline: examples -> model-ready, left-padded, bucketed batches.

Stages (grain `DataLoader` operations, run in `worker_count` worker processes if asked):
shuffle (seeded `IndexSampler`, per epoch) -> decode (tfds bytes to str; audio from the
example, or decoded from `audio_path` with `audio_io`) -> log-mel features (one example at a
time, numpy on the host: `data/log_mel.py`) -> prompt (`prompts.format_question`, `Tokenizer.encode_prompt` with the audio
placeholder repeated once per audio token) -> batch (left-pad to a length bucket).
Per-host sharding: host p reads the p-th block of every global batch (`config.batch_size`
rows per host; `parallel.distributed.HostBlockSampler`), so the global batch is the same on
any number of processes. The iterator's
state is checkpointable: `it = iter(loader); state = it.get_state(); it.set_state(state)`
(bytes; `grain.checkpoint.CheckpointSave` / `CheckpointRestore` put it in an orbax
checkpoint).

A batch is a dict of numpy arrays (B = batch_size, T = the bucket, F = frames):

  prompt_ids        int32[B, T]   left-padded with `tokenizer.pad_id`
  prompt_mask       int32[B, T]   1 on prompt tokens
  input_features    f32[B, n_mels, F]
  feature_mask      int32[B, F]   1 on frames of real audio
  num_audio_tokens  int32[B]      `<|AUDIO|>` tokens in the prompt
  example_mask      int32[B]      0 on rows that only pad a final partial batch
  index             int64[B]      position of the record in its source's generation
                                  order (-1 on padding rows)
  id, question, choices, answer, task, category, sub_category, difficulty, source, version,
  audio_path, extra (and for the synthetic set events, trace, corruption, rewordings):
                    object[B]     the record's metadata, for rewards and eval (None on
                                  padding rows; `choices` holds lists)

With `worker_count = W > 0` each worker batches the records it reads (worker k takes
records k, k + W, k + 2W, ... of the shuffled order), so batches differ from
`worker_count=0`, and with `drop_remainder=True` each worker drops its own partial batch at
the end of the data; numeric arrays then arrive as grain `SharedMemoryArray`s (np.ndarray
subclasses). With
several hosts and `drop_remainder=False` shards may differ in length by one record, so a
host may get one batch more than another.

The bucket of a batch is the smallest of `bucket_lengths` that holds its longest prompt; a
prompt longer than the largest bucket is an error naming the record. With
`drop_remainder=False` a final partial batch is filled up to `batch_size` with copies of its
first row marked `example_mask = 0`, so shapes stay static.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Mapping, Sequence

import grain
import jax
import numpy as np

from cesar_jax.data import audio_io
from cesar_jax.data import records

_NUMERIC = ("prompt_ids", "prompt_mask", "input_features", "feature_mask", "num_audio_tokens")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """The static options of a pipeline (a `config.data` ConfigDict converts with `**`)."""
  batch_size: int
  bucket_lengths: tuple[int, ...]  # prompt lengths (tokens) to left-pad to
  n_mels: int = 128  # Qwen2-Audio's Whisper-large-v3 front end
  chunk_seconds: float = 30.0  # Whisper's window; longer audio is truncated
  think_budget: int | None = None  # stated in the prompt ("prompted" budget mode)
  shuffle: bool = True
  seed: int = 0
  num_epochs: int | None = None  # None: repeat forever (training)
  drop_remainder: bool = True  # False for eval: the last batch is padded, see example_mask
  worker_count: int = 0  # grain worker processes; 0 = in the main process
  worker_buffer_size: int = 1

  def __post_init__(self):
    object.__setattr__(self, "bucket_lengths", tuple(sorted(int(b) for b in self.bucket_lengths)))
    if not self.bucket_lengths or self.bucket_lengths[0] <= 0:
      raise ValueError(f"bucket_lengths must be positive lengths, got {self.bucket_lengths}")
    if self.batch_size <= 0:
      raise ValueError(f"batch_size must be positive, got {self.batch_size}")


def num_audio_tokens(num_frames: int) -> int:
  """Audio tokens for `num_frames` valid feature frames (Qwen2-Audio: conv stride 2, pool 2).

  The same as `models.audio_encoder.num_audio_tokens`, in plain Python so that worker
  processes do not import the model. The default of `make_loader(audio_tokens_fn=...)`; pass
  `models.audio_tokens.for_arch(model_config.arch)` for another architecture's rule.
  """
  return (((num_frames - 1) // 2 + 1) - 2) // 2 + 1


def _plain(value: Any) -> Any:
  """bytes -> str, numpy string sequences -> list[str] (tfds examples hold bytes)."""
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray) and value.dtype.kind in "OSU":
    return [_plain(v) for v in value.tolist()]
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value


def record_name(example: Mapping[str, Any]) -> str:
  """How errors name a record: `source/version record 'id' (index i)`."""
  return (f"{example.get('source', '?')}/{example.get('version', '?')} record "
          f"{example.get('id', '?')!r} (index {example.get('index', '?')})")


class RecordSource:
  """A grain random-access source over in-memory `records.Record`s (from a reader).

  Items are dicts of the record's fields plus `index`; audio is decoded later, in the
  pipeline, from `audio_path` when the record holds no samples.
  """

  def __init__(self, recs: Sequence[records.Record]):
    self._records = list(recs)

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = self._records[index]
    return {**record.metadata(), "audio": record.audio, "index": int(index)}


@dataclasses.dataclass(frozen=True)
class DecodeExample(grain.transforms.Map):
  """tfds example or RecordSource item -> plain dict with `audio` float32[N] at 16 kHz."""

  def map(self, example: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: (v if k == "audio" else _plain(v)) for k, v in example.items()}
    out["index"] = int(out.get("index", -1))
    for key in ("extra", "events"):  # JSON strings in tfds examples
      if isinstance(out.get(key), str):
        out[key] = json.loads(out[key])
    audio = out.get("audio")
    if audio is None or np.size(audio) == 0:
      path = out.get("audio_path") or ""
      if not path:
        raise records.BadRecordError(records.MALFORMED, f"{record_name(out)}: no audio samples "
                                     "and no audio_path")
      try:
        audio = audio_io.load_audio(path)
      except audio_io.AudioError as e:
        reason = (records.MISSING_AUDIO if isinstance(e, audio_io.MissingAudioError)
                  else records.UNREADABLE_AUDIO)
        raise records.BadRecordError(reason, f"{record_name(out)}: {e}") from e
    out["audio"] = np.asarray(audio, np.float32)
    return out


@dataclasses.dataclass(frozen=True)
class ExtractFeatures(grain.transforms.Map):
  """Adds `input_features` f32[n_mels, F], `feature_mask` int32[F]; drops `audio`.

  `feature_fn(waveforms, *, n_mels, chunk_seconds) -> (f32[B, n_mels, F], int32[B, F])`
  defaults to `cesar_jax.data.log_mel.extract_features`: numpy on the host, so the pipeline
  (and its worker processes) never touch the accelerator.
  """
  n_mels: int
  chunk_seconds: float
  feature_fn: Callable[..., Any] | None = None

  def map(self, example: dict[str, Any]) -> dict[str, Any]:
    fn = self.feature_fn
    if fn is None:
      from cesar_jax.data import log_mel  # pylint: disable=g-import-not-at-top
      fn = log_mel.extract_features
    audio = example.pop("audio")
    feats, mask = fn([audio], n_mels=self.n_mels, chunk_seconds=self.chunk_seconds)
    example["input_features"] = np.asarray(feats, np.float32)[0]
    example["feature_mask"] = np.asarray(mask, np.int32)[0]
    return example


@dataclasses.dataclass(frozen=True)
class TokenizePrompt(grain.transforms.Map):
  """Adds `prompt_ids` int32[L] (unpadded) and `num_audio_tokens`.

  `prompt_fn(question, choices, *, think_budget)` defaults to `prompts.format_question`;
  `audio_tokens_fn(valid_frames) -> int` (the model architecture's rule) to `num_audio_tokens`.
  """
  tokenizer: Any  # cesar_jax.tokenizers.Tokenizer (picklable, for worker processes)
  max_length: int
  think_budget: int | None = None
  prompt_fn: Callable[..., str] | None = None
  audio_tokens_fn: Callable[[int], int] | None = None

  def map(self, example: dict[str, Any]) -> dict[str, Any]:
    fn = self.prompt_fn
    if fn is None:
      from cesar_jax import prompts  # pylint: disable=g-import-not-at-top
      fn = prompts.format_question
    n_audio = int((self.audio_tokens_fn or num_audio_tokens)(int(example["feature_mask"].sum())))
    text = fn(example["question"], example["choices"], think_budget=self.think_budget)
    ids = np.asarray(self.tokenizer.encode_prompt(text, n_audio), np.int32)
    if ids.shape[0] > self.max_length:
      raise ValueError(f"{record_name(example)}: prompt of {ids.shape[0]} tokens "
                       f"({n_audio} audio) is longer than the largest bucket "
                       f"({self.max_length}); add a larger one to bucket_lengths")
    example["prompt_ids"] = ids
    example["num_audio_tokens"] = np.int32(n_audio)
    return example


@dataclasses.dataclass(frozen=True)
class PadBatch:
  """The batch function: left-pads prompts to the batch's bucket, stacks, fills a short batch."""
  batch_size: int
  bucket_lengths: tuple[int, ...]
  pad_id: int

  def bucket(self, length: int) -> int:
    for b in self.bucket_lengths:
      if length <= b:
        return b
    raise ValueError(f"prompt length {length} exceeds the largest bucket {self.bucket_lengths[-1]}")

  def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    n = len(examples)
    rows = list(examples) + [examples[0]] * (self.batch_size - n)
    lengths = np.asarray([len(e["prompt_ids"]) for e in rows])
    t = self.bucket(int(lengths.max()))
    ids = np.full((len(rows), t), self.pad_id, np.int32)
    mask = np.zeros((len(rows), t), np.int32)
    for i, e in enumerate(rows):  # per-example host work, outside any jitted path
      ids[i, t - lengths[i]:] = e["prompt_ids"]
      mask[i, t - lengths[i]:] = 1
    batch = {"prompt_ids": ids, "prompt_mask": mask,
             "input_features": np.stack([e["input_features"] for e in rows]),
             "feature_mask": np.stack([e["feature_mask"] for e in rows]),
             "num_audio_tokens": np.asarray([e["num_audio_tokens"] for e in rows], np.int32),
             "example_mask": (np.arange(len(rows)) < n).astype(np.int32),
             "index": np.asarray([e["index"] if i < n else -1 for i, e in enumerate(rows)],
                                 np.int64)}
    for key in examples[0]:
      if key in _NUMERIC or key == "index":
        continue
      column = np.empty((len(rows),), dtype=object)  # filled one by one: lists stay lists
      for i in range(n):
        column[i] = examples[i].get(key)
      batch[key] = column
    return batch


def make_loader(source: Any, tokenizer: Any, config: PipelineConfig, *,
                shard_options: grain.sharding.ShardOptions | None = None,
                feature_fn: Callable[..., Any] | None = None,
                prompt_fn: Callable[..., str] | None = None,
                audio_tokens_fn: Callable[[int], int] | None = None) -> grain.DataLoader:
  """A grain DataLoader of batches (see the module docstring) from a random-access source.

  Args:
    source: `builders.data_source(...)` (tfds examples) or a `RecordSource`.
    tokenizer: `cesar_jax.tokenizers.Tokenizer`.
    config: the pipeline's static options.
    shard_options: which part of the data this host reads; default: this host's block of
      every global batch of `batch_size * process_count` records (`HostBlockSampler`).
    feature_fn, prompt_fn: replace the feature extractor / prompt formatter (tests,
      ablations); module-level functions when `worker_count > 0` (they are pickled).
    audio_tokens_fn: placeholders per clip from its valid frames, the model's rule
      (`models.audio_tokens.for_arch(arch)`; default `num_audio_tokens`, Qwen2-Audio's).
  """
  if len(source) == 0:
    raise ValueError(f"make_loader: the source {source!r} holds no records (were they all "
                     "skipped as bad?)")
  sampler = grain.samplers.IndexSampler(
      num_records=len(source), shuffle=config.shuffle, num_epochs=config.num_epochs,
      seed=config.seed if config.shuffle else None, shard_options=grain.sharding.NoSharding())
  if shard_options is None:
    # Host p reads its block of each global batch (see distributed.HostBlockSampler), so the
    # global batch is the same, row for row, on any number of processes.
    from cesar_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
    sampler = distributed.HostBlockSampler(sampler, config.batch_size * jax.process_count())
    shard_options = grain.sharding.NoSharding()
  operations = [
      DecodeExample(),
      ExtractFeatures(config.n_mels, config.chunk_seconds, feature_fn),
      TokenizePrompt(tokenizer, config.bucket_lengths[-1], config.think_budget, prompt_fn,
                     audio_tokens_fn),
      grain.transforms.Batch(
          config.batch_size, drop_remainder=config.drop_remainder,
          batch_fn=PadBatch(config.batch_size, config.bucket_lengths, tokenizer.pad_id)),
  ]
  return grain.DataLoader(data_source=source, sampler=sampler, operations=operations,
                          worker_count=config.worker_count,
                          worker_buffer_size=config.worker_buffer_size,
                          shard_options=shard_options)
