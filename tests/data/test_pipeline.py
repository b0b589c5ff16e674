"""grain pipeline: batch contents, buckets, padding, sharding, shuffling, worker state restore."""

import grain
import numpy as np
import pytest

from cesar_jax import prompts
from cesar_jax.data import builders
from cesar_jax.data import pipeline
from cesar_jax.data import records
from cesar_jax.models import features
from cesar_jax.tokenizers import train_tokenizer

N_MELS, CHUNK_SECONDS = 16, 1.0  # 100 feature frames
# Audio lengths (samples) and, by hand, valid frames (f * 160 < L) -> audio tokens
# ((F - 1) // 2 + 1 - 2) // 2 + 1:  1600 -> 10 -> 2;  4000 -> 25 -> 6;  16000 -> 100 -> 25;
# 20000 (truncated to 16000) -> 100 -> 25;  800 -> 5 -> 1.
LENGTHS = [1600, 4000, 16000, 20000, 800]
AUDIO_TOKENS = [2, 6, 25, 25, 1]


def _record(i: int) -> records.Record:
  rng = np.random.default_rng(i)
  choices = ("a dog", "a cat", "a bird")
  return records.Record(
      id=f"r{i}", question="Which animal do you hear?" + " Listen." * (i % 3), choices=choices,
      answer=choices[i % 3], task="sound", category="c", source="test", version="v0",
      audio=rng.uniform(-0.5, 0.5, LENGTHS[i % len(LENGTHS)]).astype(np.float32),
      extra={"n": i})


@pytest.fixture(scope="module")
def tokenizer():
  corpus = [prompts.format_question(_record(i).question, _record(i).choices) for i in range(3)]
  return train_tokenizer(corpus, vocab_size=400)


def _config(**kw) -> pipeline.PipelineConfig:
  defaults = dict(batch_size=4, bucket_lengths=(256, 128), n_mels=N_MELS,
                  chunk_seconds=CHUNK_SECONDS, shuffle=False, num_epochs=1,
                  drop_remainder=False)
  return pipeline.PipelineConfig(**(defaults | kw))


def test_num_audio_tokens_matches_the_model():
  from cesar_jax.models import audio_encoder  # pylint: disable=g-import-not-at-top
  frames = np.arange(1, 3001)
  expected = np.asarray(audio_encoder.num_audio_tokens(frames))
  assert [pipeline.num_audio_tokens(int(f)) for f in frames] == expected.tolist()
  assert pipeline.num_audio_tokens(3000) == 750  # 30 s of audio


def test_batch_contents_left_padding_buckets_and_final_padding(tokenizer):
  recs = [_record(i) for i in range(6)]
  loader = pipeline.make_loader(pipeline.RecordSource(recs), tokenizer, _config())
  batches = list(loader)
  assert len(batches) == 2
  rows = [(b, r) for b in batches for r in range(4)]
  for (batch, row), i in zip(rows, range(6)):
    rec = recs[i]
    assert batch["id"][row] == rec.id and batch["index"][row] == i
    assert batch["choices"][row] == list(rec.choices) and batch["answer"][row] == rec.answer
    assert batch["extra"][row] == {"n": i}
    assert batch["num_audio_tokens"][row] == AUDIO_TOKENS[i % 5]
    expected = tokenizer.encode_prompt(prompts.format_question(rec.question, rec.choices),
                                       AUDIO_TOKENS[i % 5])
    mask, ids = batch["prompt_mask"][row], batch["prompt_ids"][row]
    t = ids.shape[0]
    assert mask.tolist() == [0] * (t - len(expected)) + [1] * len(expected)  # left-padded
    assert ids[mask == 1].tolist() == expected
    assert (ids[mask == 0] == tokenizer.pad_id).all()
    assert (ids == tokenizer.audio_id).sum() == AUDIO_TOKENS[i % 5]
    feats, fmask = features.extract_features([rec.audio], n_mels=N_MELS,
                                             chunk_seconds=CHUNK_SECONDS)
    np.testing.assert_allclose(batch["input_features"][row], np.asarray(feats)[0], atol=1e-6)
    np.testing.assert_array_equal(batch["feature_mask"][row], fmask[0])
  for batch in batches:  # the smallest bucket that holds the longest prompt
    longest = batch["prompt_mask"].sum(axis=1).max()
    assert batch["prompt_ids"].shape[1] == min(b for b in (128, 256) if b >= longest)
    assert batch["input_features"].shape == (4, N_MELS, 100)
    assert batch["prompt_ids"].dtype == np.int32 and batch["feature_mask"].dtype == np.int32
  # The final partial batch: 2 real rows, 2 padding rows with static shapes.
  last = batches[1]
  assert last["example_mask"].tolist() == [1, 1, 0, 0]
  assert last["index"].tolist() == [4, 5, -1, -1] and last["id"].tolist() == ["r4", "r5", None,
                                                                               None]
  assert batches[0]["example_mask"].tolist() == [1, 1, 1, 1]


def test_prompt_longer_than_largest_bucket_names_the_record(tokenizer):
  loader = pipeline.make_loader(pipeline.RecordSource([_record(0)]), tokenizer,
                                _config(bucket_lengths=(16,)))
  with pytest.raises(Exception, match=r"test/v0 record 'r0' \(index 0\): prompt of \d+ tokens "
                     r"\(2 audio\) is longer than the largest bucket \(16\)"):
    next(iter(loader))


def test_missing_audio_file_in_pipeline_names_the_record(tokenizer, tmp_path):
  rec = records.Record(id="gone", question="q", choices=("a",), answer="a", source="s",
                       version="v", audio_path=str(tmp_path / "gone.wav"))
  loader = pipeline.make_loader(pipeline.RecordSource([rec]), tokenizer, _config())
  with pytest.raises(Exception, match=r"s/v record 'gone' \(index 0\): .*gone.wav: audio file "
                     "not found"):
    next(iter(loader))


def _indices(loader) -> list[int]:
  return [i for b in loader for i, m in zip(b["index"], b["example_mask"]) if m]


def test_per_host_shards_are_disjoint_and_cover_the_data(tokenizer):
  source = pipeline.RecordSource([_record(i) for i in range(8)])
  shards = [_indices(pipeline.make_loader(
      source, tokenizer, _config(batch_size=2, drop_remainder=True, shuffle=True, seed=3),
      shard_options=grain.sharding.ShardOptions(k, 2, drop_remainder=True))) for k in range(2)]
  assert len(shards[0]) == len(shards[1]) == 4
  assert sorted(shards[0] + shards[1]) == list(range(8))


def test_shuffle_is_seeded_and_per_epoch(tokenizer):
  source = pipeline.RecordSource([_record(i) for i in range(6)])
  def order(seed, epochs=1):
    return _indices(pipeline.make_loader(source, tokenizer, _config(
        batch_size=1, shuffle=True, seed=seed, num_epochs=epochs)))
  first = order(7)
  assert sorted(first) == list(range(6)) and first != list(range(6))
  assert order(7) == first and order(8) != first
  two = order(7, epochs=2)
  assert two[:6] == first and sorted(two[6:]) == list(range(6)) and two[6:] != first


@pytest.fixture(scope="module")
def tfds_source(tmp_path_factory):
  def generate(split, n, seed):
    for i in range(n):
      rec = _record(i)
      yield {**rec.metadata(), "id": f"{split}-{i}", "audio": rec.audio, "difficulty": "easy",
             "events": [], "trace": "", "corruption": "none", "rewordings": []}
  config = builders.SyntheticConfig(name="p", num_examples={"train": 20}, generate_fn=generate)
  builder = builders.prepare(builders.SyntheticBuilder(
      config=config, data_dir=tmp_path_factory.mktemp("tfds")))
  return builders.data_source(builder, "train")


def test_tfds_source_batches(tokenizer, tfds_source):
  batch = next(iter(pipeline.make_loader(tfds_source, tokenizer, _config(batch_size=20))))
  order = np.argsort(batch["index"])
  assert batch["index"][order].tolist() == list(range(20))
  assert [batch["id"][i] for i in order[:3]] == ["train-0", "train-1", "train-2"]
  assert batch["num_audio_tokens"][order].tolist() == AUDIO_TOKENS * 4
  assert batch["events"][0] == [] and batch["rewordings"][0] == []
  assert isinstance(batch["question"][0], str) and batch["choices"][0] == ["a dog", "a cat",
                                                                           "a bird"]


def test_two_workers_state_restore_gives_the_same_batches(tokenizer, tfds_source):
  config = _config(batch_size=2, shuffle=True, seed=1, num_epochs=2, drop_remainder=True,
                   worker_count=2)
  it = iter(pipeline.make_loader(tfds_source, tokenizer, config))
  seen = [next(it)["index"].tolist() for _ in range(3)]
  state = it.get_state()
  following = [next(it) for _ in range(4)]
  del it
  restored = iter(pipeline.make_loader(tfds_source, tokenizer, config))
  restored.set_state(state)
  again = [next(restored) for _ in range(4)]
  del restored
  assert [b["index"].tolist() for b in again] == [b["index"].tolist() for b in following]
  for a, b in zip(again, following):
    np.testing.assert_array_equal(a["prompt_ids"], b["prompt_ids"])
    np.testing.assert_array_equal(a["input_features"], b["input_features"])
    assert a["id"].tolist() == b["id"].tolist()
  # Still in the first epoch: no record seen twice.
  all_indices = sum(seen, []) + sum((b["index"].tolist() for b in following), [])
  assert len(set(all_indices)) == len(all_indices) == 14
