"""Whisper log-mel features on the host, in numpy: what the data pipeline runs per clip.

The same computation as `cesar_jax.models.features.log_mel_spectrogram` (the jitted one, which
documents the steps and is held equal to transformers' `WhisperFeatureExtractor`), in numpy so
that feature extraction in the input pipeline never touches the accelerator: on a pod host a
jitted call per clip is one device round trip each, and grain worker processes would each try
to open the TPU. The spectrogram is float64 internally (numpy's FFT), cast to float32 at the
end; tests hold it equal to the JAX version.

  feats, mask = extract_features([wave], n_mels=128, chunk_seconds=30.0)   # numpy arrays
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from cesar_jax.models import features as jax_features

N_FFT, HOP_LENGTH = jax_features.N_FFT, jax_features.HOP_LENGTH


@functools.lru_cache(maxsize=None)
def mel_bands(n_mels: int, n_fft: int = N_FFT) -> tuple[np.ndarray, np.ndarray]:
  """The mel filterbank [K, M] (K = n_fft // 2 + 1 bins) as bands: (rows int[M, W], weights
  f64[M, W]), filter m's weights on bins rows[m] (ascending; zero-weighted past its band).

  Why bands, not the dense [K, M] product: a triangular filter covers at most W of the K bins
  (W = 9 of 201 for 128 mels at n_fft 400), so the band product does ~W / K of the dense one's
  work (a 2 s clip: 0.2 vs 1.2 ms) and adds the same nonzero terms in the same order (equal to
  the dense product bit for bit, tests/data/test_log_mel.py). And no BLAS: a BLAS matmul is
  about as fast, but OpenBLAS's threads then spin for ~0.1 s of CPU after each call, taking a
  core from the XLA:CPU program that runs next (the GRPO benchmark's sampling phase,
  docs/benchmarks.md).
  """
  filters = jax_features.mel_filters(n_mels, n_fft).astype(np.float64)
  nonzero = filters != 0
  start = np.argmax(nonzero, axis=0)
  stop = filters.shape[0] - np.argmax(nonzero[::-1], axis=0)  # past each filter's last bin
  count = np.where(nonzero.any(axis=0), stop - start, 0)
  offsets = np.arange(max(int(count.max()), 1))
  rows = np.minimum(start[:, None] + offsets, filters.shape[0] - 1)
  weights = np.where(offsets < count[:, None], filters[rows, np.arange(n_mels)[:, None]], 0.0)
  return rows, weights


def mel_projection(power: np.ndarray, n_mels: int, n_fft: int = N_FFT) -> np.ndarray:
  """f64[B, F, K] power spectra -> f64[B, n_mels, F] mel energies, on the bands of `mel_bands`."""
  rows, weights = mel_bands(n_mels, n_fft)
  return np.einsum("bfmw,mw->bmf", power[:, :, rows], weights, optimize=False)


def log_mel_spectrogram(waveform: np.ndarray, n_mels: int = 128, n_fft: int = N_FFT,
                        hop_length: int = HOP_LENGTH) -> np.ndarray:
  """f32[B, N] padded 16 kHz waveforms (N a multiple of hop) -> f32[B, n_mels, N // hop]."""
  waveform = np.asarray(waveform, np.float32)
  if waveform.ndim != 2:
    raise ValueError(f"log_mel_spectrogram: waveform must be f32[B, N], got shape {waveform.shape}")
  count = waveform.shape[1] // hop_length
  pad = n_fft // 2
  padded = np.pad(waveform, ((0, 0), (pad, pad)), mode="reflect")
  window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
  frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=1)[:, ::hop_length][:, :count]
  spectrum = np.fft.rfft(frames * window, n=n_fft, axis=-1)  # [B, F, n_fft // 2 + 1]
  power = spectrum.real ** 2 + spectrum.imag ** 2
  mel = mel_projection(power, n_mels, n_fft)
  log_spec = np.log10(np.maximum(mel, 1e-10))
  log_spec = np.maximum(log_spec, log_spec.max(axis=(1, 2), keepdims=True) - 8.0)
  return ((log_spec + 4.0) / 4.0).astype(np.float32)


def extract_features(waveforms: Sequence[np.ndarray] | np.ndarray, *, n_mels: int = 128,
                     chunk_seconds: float = jax_features.WHISPER_CHUNK_SECONDS
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Waveforms (16 kHz, any lengths) -> (f32[B, n_mels, F], int32[B, F]), all numpy.

  The host twin of `models.features.extract_features` (same padding, truncation and mask).
  """
  samples = jax_features.num_samples(chunk_seconds)
  batch, lengths = jax_features.pad_or_trim(waveforms, samples)
  feats = log_mel_spectrogram(batch, n_mels=n_mels)
  return feats, jax_features.feature_attention_mask(lengths, jax_features.num_frames(samples))
