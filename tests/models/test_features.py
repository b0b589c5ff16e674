"""Whisper log-mel front end: parity with transformers.WhisperFeatureExtractor."""

import numpy as np
import pytest

from cesar_jax.models import features

transformers = pytest.importorskip("transformers")
audio_utils = pytest.importorskip("transformers.audio_utils")

SR = 16_000


def _waves(rng: np.random.Generator, chunk_seconds: int) -> list[np.ndarray]:
  """Tones, noise, silence, clipped, tiny and long signals (the long one is truncated)."""
  n = chunk_seconds * SR
  t = np.arange(2 * n) / SR
  sweep = 0.3 * np.sin(2 * np.pi * (200 * t + 400 * t ** 2))  # 200 Hz rising 800 Hz/s
  return [
      (0.5 * np.sin(2 * np.pi * 440 * t[:SR + 123])).astype(np.float32),  # short tone, odd length
      rng.normal(0, 0.1, n + 4321).astype(np.float32),  # noise, longer than the chunk
      np.zeros(SR // 2, np.float32),  # silence
      np.clip(3.0 * np.sin(2 * np.pi * 300 * t[:2 * SR]), -1, 1).astype(np.float32),  # clipped
      (1e-3 * np.sin(2 * np.pi * 1000 * t[:n // 2])).astype(np.float32),  # quiet
      sweep[:2 * n].astype(np.float32),  # twice the chunk: truncated
      rng.normal(0, 1e-4, 12345).astype(np.float64),  # float64 input, very low level
  ]


@pytest.mark.parametrize("n_mels,chunk_seconds", [(80, 30), (128, 30), (128, 4)])
def test_matches_whisper_feature_extractor(n_mels, chunk_seconds):
  waves = _waves(np.random.default_rng(n_mels + chunk_seconds), chunk_seconds)
  extractor = transformers.WhisperFeatureExtractor(feature_size=n_mels, chunk_length=chunk_seconds)
  ref = extractor(waves, sampling_rate=SR, return_attention_mask=True, padding="max_length",
                  return_tensors="np")
  feats, mask = features.extract_features(waves, n_mels=n_mels, chunk_seconds=chunk_seconds)
  feats = np.asarray(feats)
  assert feats.shape == (len(waves), n_mels, chunk_seconds * 100) == ref["input_features"].shape
  np.testing.assert_allclose(feats, ref["input_features"], atol=1e-4, rtol=0)
  np.testing.assert_array_equal(mask, ref["attention_mask"])
  assert mask.dtype == np.int32
  # Hand-checked mask: 16123 samples -> frames 0..100 valid (100 * 160 = 16000 < 16123).
  assert mask[0].sum() == 101 and mask[2].sum() == 50 and mask[1].all() and mask[5].all()


def test_silence_and_per_example_normalisation():
  # Silence: log10(1e-10) = -10 everywhere -> (-10 + 4) / 4 = -1.5, whatever the batch holds.
  loud = np.random.default_rng(0).normal(0, 0.5, 4 * SR).astype(np.float32)
  feats, _ = features.extract_features([np.zeros(SR, np.float32), loud], n_mels=80, chunk_seconds=4)
  feats = np.asarray(feats)
  np.testing.assert_allclose(feats[0], -1.5, atol=1e-6)
  # The max-8 clamp is per example: each example's range is at most 8 / 4 = 2.
  assert feats[1].max() - feats[1].min() <= 2.0 + 1e-5
  assert feats[1].max() > 0.5  # loud noise sits far above the silence floor


def test_mel_filters_match_transformers():
  for n_mels in (80, 128):
    ref = audio_utils.mel_filter_bank(num_frequency_bins=201, num_mel_filters=n_mels, min_frequency=0.0,
                                      max_frequency=8000.0, sampling_rate=SR, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(features.mel_filters(n_mels), ref, rtol=1e-5, atol=1e-8)


def test_frames_match_a_gather():
  x = np.arange(2 * 1000, dtype=np.float32).reshape(2, 1000)
  frames = np.asarray(features._frames(x, 400, 160, 4))
  expected = np.stack([x[:, f * 160:f * 160 + 400] for f in range(4)], axis=1)
  np.testing.assert_array_equal(frames, expected)


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match="multiple of 160"):
    features.num_samples(0.0051)
  with pytest.raises(ValueError, match="waveform 1 must be mono"):
    features.pad_or_trim([np.zeros(10), np.zeros((2, 10))], 160)
  with pytest.raises(ValueError, match="expected a batch"):
    features.pad_or_trim(np.zeros(10), 160)
