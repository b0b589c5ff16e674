"""Greedy sampling equals transformers `generate` token for token on a tiny random Qwen2-Audio."""

import numpy as np
import pytest

import hf_fixtures
from cesar_jax.sampling import budgets as budgets_lib
from cesar_jax.sampling import sampler as sampler_lib

torch = pytest.importorskip("torch")

MAX_NEW = 12
PAD = 0


def _hf_generate(model, batch, eos):
  inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
  with torch.no_grad():
    out = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=eos,
                         pad_token_id=PAD)
  return out[:, batch["input_ids"].shape[1]:].numpy()


def test_frames_are_trimmed_to_the_bucket():
  from cesar_jax.sampling import batching  # pylint: disable=g-import-not-at-top
  feats = np.zeros((2, 4, 48), np.float32)
  mask = (np.arange(48)[None] < np.array([[30], [17]])).astype(np.int32)
  for buckets, width in [((16, 32), 32), ((16, 33, 40), 34), ((16,), 48), (None, 48)]:
    f, m = batching.trim_frames(feats, mask, buckets)
    assert f.shape[2] == m.shape[1] == width, buckets


def test_greedy_matches_transformers_generate(tmp_path):
  spec = hf_fixtures.HFSpec(num_key_value_heads=2)
  path, hf_model = hf_fixtures.build_hf_checkpoint(tmp_path, spec, seed=2)
  from cesar_jax.checkpoints import hf  # pylint: disable=g-import-not-at-top
  model = hf.load(path)
  # Three prompts of different lengths (left-padded) with clips of different lengths. HF encodes
  # all 48 frames; the sampler cuts them to the 32-frame bucket (longest clip 30 + 2).
  batch = hf_fixtures.make_batch(spec, feature_lengths=[30, 17, 24], text_lengths=[3, 12, 7],
                                 seed=3)
  assert batch["attention_mask"][0, 0] == 0
  # A stop id the model really emits in one row only, late: that row stops, the others run on.
  free = _hf_generate(hf_model, batch, eos=None)
  eos = next(int(free[r, p]) for p in range(4, MAX_NEW) for r in range(3)
             if free[r, p] not in free[r, :p] and (free[np.arange(3) != r] != free[r, p]).all())
  want = _hf_generate(hf_model, batch, eos=eos)
  assert want.shape[1] == MAX_NEW and (want == eos).sum() == 1
  tags = budgets_lib.TagIds(think_open=91, think_close=92, answer_open=93)
  cfg = sampler_lib.SamplerConfig(tags=tags, pad_id=PAD, stop_ids=(eos,), max_new_tokens=MAX_NEW,
                                  prompt_buckets=(48,), frame_buckets=(16, 32))
  out = sampler_lib.sample(model, batch, greedy=True, config=cfg)
  n = want.shape[1]  # generate stops early when every row has stopped
  np.testing.assert_array_equal(out.tokens[:, :n], want)
  np.testing.assert_array_equal(out.tokens[:, n:], PAD)
  stopped = (want == eos).any(axis=1)
  assert stopped.sum() == 1  # one row stops early, the others run to MAX_NEW
  np.testing.assert_array_equal(out.finish_reasons, np.where(stopped, "stop", "length"))
  # Lengths: up to and including the first stop id, else the whole budget.
  first = np.where(stopped, (want == eos).argmax(axis=1) + 1, MAX_NEW)
  np.testing.assert_array_equal(out.lengths, first)
