"""The host (numpy) log-mel of the data pipeline equals the jitted one and transformers'."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cesar_jax.data import log_mel
from cesar_jax.data import pipeline
from cesar_jax.models import features

transformers = pytest.importorskip("transformers")
SR = 16_000


def _waves(seed: int, chunk_seconds: int) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  t = np.arange(2 * chunk_seconds * SR) / SR
  return [(0.5 * np.sin(2 * np.pi * 440 * t[:SR + 123])).astype(np.float32),
          rng.normal(0, 0.1, chunk_seconds * SR + 4321).astype(np.float32),  # truncated
          np.zeros(SR // 2, np.float32),
          (1e-3 * np.sin(2 * np.pi * 1000 * t[:SR])).astype(np.float32)]


@pytest.mark.parametrize("n_mels,chunk_seconds", [(128, 30), (80, 4), (16, 1)])
def test_numpy_features_equal_jax_and_whisper(n_mels, chunk_seconds):
  waves = _waves(n_mels, chunk_seconds)
  got, mask = log_mel.extract_features(waves, n_mels=n_mels, chunk_seconds=chunk_seconds)
  assert isinstance(got, np.ndarray) and got.dtype == np.float32
  want, want_mask = features.extract_features(waves, n_mels=n_mels, chunk_seconds=chunk_seconds)
  np.testing.assert_allclose(got, np.asarray(want), atol=2e-5, rtol=0)
  np.testing.assert_array_equal(mask, want_mask)
  if n_mels in (80, 128):
    ref = transformers.WhisperFeatureExtractor(feature_size=n_mels, chunk_length=chunk_seconds)(
        waves, sampling_rate=SR, padding="max_length", return_tensors="np")
    np.testing.assert_allclose(got, ref["input_features"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("n_mels", [16, 80, 128])
def test_the_band_product_is_the_dense_mel_product_bit_for_bit(n_mels):
  """`mel_projection` (on `mel_bands`) keeps every nonzero filter weight, in bin order: the
  same sums as the dense [K, M] product, float64 bit for bit, on spectra of five magnitudes."""
  filters = features.mel_filters(n_mels).astype(np.float64)
  _, weights = log_mel.mel_bands(n_mels)
  assert weights.shape[1] < filters.shape[0] // 2  # a band, not the whole spectrum
  rng = np.random.default_rng(n_mels)
  for scale in (1e-8, 1e-3, 1.0, 1e3, 1e6):
    power = scale * rng.random((2, 37, filters.shape[0])) ** 2
    dense = np.einsum("bfk,km->bmf", power, filters, optimize=False)
    np.testing.assert_array_equal(log_mel.mel_projection(power, n_mels), dense)


# Runs in a fresh interpreter: the CPU ticks its threads other than the main one spend while
# and after it extracts features. A multithreaded BLAS call leaves its threads spinning (about
# 0.1 s of CPU each call), which on a CPU host takes a core from the XLA program that runs next.
_SPIN_PROBE = textwrap.dedent("""
    import os, time
    import numpy as np
    from cesar_jax.data import log_mel
    def other_threads_ticks():
      total = 0
      for tid in os.listdir("/proc/self/task"):
        if tid == str(os.getpid()):
          continue
        try:
          fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
          continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
      return total
    wave = np.random.default_rng(0).normal(0, 0.1, 32000).astype(np.float32)
    log_mel.extract_features([wave, wave], n_mels=128, chunk_seconds=2.0)
    before = other_threads_ticks()
    for _ in range(5):
      log_mel.extract_features([wave, wave], n_mels=128, chunk_seconds=2.0)
    time.sleep(0.2)
    print(other_threads_ticks() - before)
""")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc per-thread times")
def test_feature_extraction_leaves_no_thread_spinning():
  """The host log-mel runs on the calling thread alone (no BLAS): no other thread of the process
  burns CPU during or after it. With the projection as a BLAS matmul, this measured 11-12
  ticks (110-120 ms) on the project CPU; now 0."""
  out = subprocess.run([sys.executable, "-c", _SPIN_PROBE], capture_output=True, text=True,
                       timeout=300, check=True)
  ticks = int(out.stdout.strip().splitlines()[-1])
  assert ticks <= 2, f"other threads used {ticks} CPU ticks (10 ms each) around feature extraction"


def test_the_pipeline_extracts_on_the_host_without_jax(monkeypatch):
  """The pipeline's default feature map never calls the jitted spectrogram."""
  def fail(*args, **kwargs):
    raise AssertionError("the data pipeline called the jitted log-mel")
  monkeypatch.setattr(features, "log_mel_spectrogram", fail)
  example = {"audio": _waves(0, 1)[0], "question": "q"}
  out = pipeline.ExtractFeatures(n_mels=16, chunk_seconds=1.0).map(example)
  assert out["input_features"].shape == (16, 100) and out["feature_mask"].sum() == 100
