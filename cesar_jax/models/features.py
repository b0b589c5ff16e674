"""Whisper log-mel front end in JAX (Qwen2-Audio: 128 mels; Whisper: 80).

Reproduces `transformers.WhisperFeatureExtractor(feature_size=n_mels)` called with
`padding="max_length", truncation=True, return_attention_mask=True` (its torch path):

1. pad with zeros / truncate every waveform to `chunk_seconds * 16 kHz` samples;
2. reflect-pad by n_fft // 2 on both sides, periodic Hann window, 400-point STFT
   (25 ms) every 160 samples (10 ms), power spectrum;
3. Slaney-normalised, Slaney-scale mel filter bank (0-8 kHz);
4. log10 of max(mel, 1e-10), drop the last frame;
5. per example: clamp at (max over mels and frames of that example) - 8, then (x + 4) / 4.

The max in step 5 is taken per example over the whole padded chunk (padding included),
exactly as the HF extractor does on a batch. The attention mask marks frame f valid
when f * hop < number of real (untruncated, unpadded) samples.

The default chunk is 30 s (3000 frames). Tiny CPU runs use short chunks, e.g.
`chunk_seconds=4` gives 400 frames (HF: `WhisperFeatureExtractor(chunk_length=4)`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16_000  # Hz
N_FFT = 400  # 25 ms window
HOP_LENGTH = 160  # 10 ms hop
WHISPER_CHUNK_SECONDS = 30.0


def _hz_to_mel_slaney(freq: np.ndarray) -> np.ndarray:
  freq = np.asarray(freq, np.float64)
  mels = 3.0 * freq / 200.0
  log_region = freq >= 1000.0
  return np.where(log_region, 15.0 + np.log(np.maximum(freq, 1e-12) / 1000.0) * (27.0 / np.log(6.4)), mels)


def _mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
  mels = np.asarray(mels, np.float64)
  freq = 200.0 * mels / 3.0
  return np.where(mels >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels - 15.0)), freq)


@functools.lru_cache(maxsize=None)
def mel_filters(n_mels: int, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Slaney mel filter bank, f32[n_fft // 2 + 1, n_mels] (librosa / HF `mel_filter_bank`)."""
  num_bins = n_fft // 2 + 1
  fft_freqs = np.linspace(0, sample_rate // 2, num_bins)
  mel_points = np.linspace(_hz_to_mel_slaney(0.0), _hz_to_mel_slaney(sample_rate / 2), n_mels + 2)
  filter_freqs = _mel_to_hz_slaney(mel_points)
  filter_diff = np.diff(filter_freqs)
  slopes = filter_freqs[None, :] - fft_freqs[:, None]  # [bins, n_mels + 2]
  down = -slopes[:, :-2] / filter_diff[:-1]
  up = slopes[:, 2:] / filter_diff[1:]
  filters = np.maximum(0.0, np.minimum(down, up))
  filters *= (2.0 / (filter_freqs[2:n_mels + 2] - filter_freqs[:n_mels]))[None, :]
  filters = filters.astype(np.float32)
  filters.flags.writeable = False  # cached: shared by every caller
  return filters


def num_samples(chunk_seconds: float, sample_rate: int = SAMPLE_RATE) -> int:
  """Samples in a chunk; must be a whole number of hops."""
  n = int(round(chunk_seconds * sample_rate))
  if n <= 0 or n % HOP_LENGTH:
    raise ValueError(f"chunk_seconds={chunk_seconds} gives {n} samples: need a positive multiple of "
                     f"{HOP_LENGTH} (the hop)")
  return n


def num_frames(num_samples_: int, hop_length: int = HOP_LENGTH) -> int:
  """Feature frames for a padded chunk of `num_samples_` samples (the STFT's last frame is dropped)."""
  return num_samples_ // hop_length


def _frames(x: jax.Array, n_fft: int, hop: int, count: int) -> jax.Array:
  """f32[B, P] -> f32[B, count, n_fft], frame f = x[:, f*hop : f*hop + n_fft], without a gather.

  The signal is cut into blocks of g = gcd(n_fft, hop) samples; frame f is the
  n_fft / g consecutive blocks starting at block f * hop / g, i.e. a few strided slices.
  """
  g = math.gcd(n_fft, hop)
  step, width = hop // g, n_fft // g
  num_blocks = (count - 1) * step + width
  blocks = x[:, :num_blocks * g].reshape(x.shape[0], num_blocks, g)
  parts = [blocks[:, k:k + (count - 1) * step + 1:step] for k in range(width)]  # each [B, count, g]
  return jnp.concatenate(parts, axis=-1)


@functools.partial(jax.jit, static_argnames=("n_mels", "n_fft", "hop_length"))
def log_mel_spectrogram(waveform: jax.Array, n_mels: int = 128, n_fft: int = N_FFT,
                        hop_length: int = HOP_LENGTH) -> jax.Array:
  """Whisper log-mel features of already padded waveforms.

  Args:
    waveform: f32[B, N] at 16 kHz, N a multiple of hop_length (the padded chunk).
    n_mels: 128 (Qwen2-Audio, Whisper large-v3) or 80 (Whisper).

  Returns:
    f32[B, n_mels, N // hop_length], normalised per example as Whisper does.
  """
  waveform = jnp.asarray(waveform, jnp.float32)
  if waveform.ndim != 2:
    raise ValueError(f"log_mel_spectrogram: waveform must be f32[B, N], got shape {waveform.shape}")
  count = waveform.shape[1] // hop_length
  pad = n_fft // 2
  padded = jnp.pad(waveform, ((0, 0), (pad, pad)), mode="reflect")
  window = jnp.asarray(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft), jnp.float32)  # periodic Hann
  frames = _frames(padded, n_fft, hop_length, count) * window  # [B, F, n_fft]
  spectrum = jnp.fft.rfft(frames, n=n_fft, axis=-1)  # [B, F, n_fft // 2 + 1]
  power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
  mel = jnp.einsum("bfk,km->bmf", power, jnp.asarray(mel_filters(n_mels, n_fft)),
                   precision=jax.lax.Precision.HIGHEST)  # [B, n_mels, F]
  log_spec = jnp.log10(jnp.maximum(mel, 1e-10))
  log_spec = jnp.maximum(log_spec, jnp.max(log_spec, axis=(1, 2), keepdims=True) - 8.0)
  return (log_spec + 4.0) / 4.0


def feature_attention_mask(lengths: np.ndarray, frames: int, hop_length: int = HOP_LENGTH) -> np.ndarray:
  """int32[B, frames]: frame f is valid iff f * hop_length < length (HF's `mask[:, ::hop]`)."""
  lengths = np.asarray(lengths)
  return (np.arange(frames)[None, :] * hop_length < lengths[:, None]).astype(np.int32)


def pad_or_trim(waveforms: Sequence[np.ndarray] | np.ndarray, samples: int) -> tuple[np.ndarray, np.ndarray]:
  """Zero-pads / truncates each waveform to `samples`. Returns (f32[B, samples], int32[B] kept lengths)."""
  if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
    raise ValueError(f"pad_or_trim: expected a batch (list of f32[N] or f32[B, N]), got f32{list(waveforms.shape)}")
  out = np.zeros((len(waveforms), samples), np.float32)
  lengths = np.zeros((len(waveforms),), np.int32)
  for i, w in enumerate(waveforms):
    w = np.asarray(w, np.float32)
    if w.ndim != 1:
      raise ValueError(f"pad_or_trim: waveform {i} must be mono f32[N], got shape {w.shape}")
    n = min(w.shape[0], samples)
    out[i, :n] = w[:n]
    lengths[i] = n
  return out, lengths


def extract_features(waveforms: Sequence[np.ndarray] | np.ndarray, *, n_mels: int = 128,
                     chunk_seconds: float = WHISPER_CHUNK_SECONDS) -> tuple[jax.Array, np.ndarray]:
  """Waveforms (16 kHz, any lengths) -> (features f32[B, n_mels, F], attention_mask int32[B, F]).

  F = chunk_seconds * 100. Padding/truncation happens on the host; the spectrogram is jitted
  (one compilation per (B, chunk, n_mels)).
  """
  samples = num_samples(chunk_seconds)
  batch, lengths = pad_or_trim(waveforms, samples)
  features = log_mel_spectrogram(batch, n_mels=n_mels)
  return features, feature_attention_mask(lengths, num_frames(samples))
