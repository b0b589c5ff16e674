"""Greedy sampling equals transformers' Qwen2.5-Omni thinker `generate`, token for token."""

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


def test_greedy_matches_transformers_thinker_generate(tmp_path):
  # Chunks of 6 frames; clips of 30, 17 and 23 valid frames (none a whole number of chunks)
  # inside 40 padded frames, prompts of different lengths, left-padded.
  spec = hf_fixtures.OmniSpec(n_window=3, feature_frames=40)
  path, hf_model = hf_fixtures.build_hf_checkpoint(tmp_path, spec, seed=2)
  from cesar_jax.checkpoints import hf  # pylint: disable=g-import-not-at-top
  model = hf.load(path)
  assert model.config.arch == "qwen2_5_omni"
  batch = hf_fixtures.make_batch(spec, feature_lengths=[30, 17, 23], text_lengths=[3, 12, 7],
                                 seed=3)
  assert batch["attention_mask"][0, 0] == 0
  # A stop id the model really emits in one row only, late: that row stops, the others run on.
  free = _hf_generate(hf_model, batch, eos=None)
  eos = next(int(free[r, p]) for p in range(4, MAX_NEW) for r in range(3)
             if free[r, p] not in free[r, :p] and (free[np.arange(3) != r] != free[r, p]).all())
  want = _hf_generate(hf_model, batch, eos=eos)
  assert want.shape[1] == MAX_NEW and (want == eos).sum() == 1
  tags = budgets_lib.TagIds(think_open=80, think_close=81, answer_open=82)
  # The sampler cuts the 40 frames to the 32-frame bucket: fewer chunks, same valid frames.
  cfg = sampler_lib.SamplerConfig(tags=tags, pad_id=PAD, stop_ids=(eos,), max_new_tokens=MAX_NEW,
                                  prompt_buckets=(48,), frame_buckets=(16, 32))
  out = sampler_lib.sample(model, batch, greedy=True, config=cfg)
  np.testing.assert_array_equal(out.tokens[:, :MAX_NEW], want)
  stopped = (want == eos).any(axis=1)
  np.testing.assert_array_equal(out.finish_reasons, np.where(stopped, "stop", "length"))
  first = np.where(stopped, (want == eos).argmax(axis=1) + 1, MAX_NEW)
  np.testing.assert_array_equal(out.lengths, first)
