"""Audio decoding: any file soundfile reads (WAV, FLAC, OGG, MP3, ...) -> float32 16 kHz mono.

Decoding is soundfile's, resampling is soxr's (its default "HQ" quality); nothing here is
hand-written signal processing. Channels are averaged before resampling (cheaper, and the
same as averaging after, resampling being linear). Output length is
`round(num_frames * 16000 / file_rate)` (soxr's rule).

Errors name the file: `MissingAudioError` (no such file) and `UnreadableAudioError` (not
decodable, or no samples). Both are `AudioError`, an `OSError`.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16_000  # Whisper / Qwen2-Audio input rate.


class AudioError(OSError):
  """An audio file that cannot be used; the message names the file."""

  def __init__(self, path: str | os.PathLike, detail: str):
    self.path = str(path)
    self.detail = detail
    super().__init__(f"{self.path}: {detail}")


class MissingAudioError(AudioError):
  """The audio file does not exist."""


class UnreadableAudioError(AudioError):
  """The audio file exists but cannot be decoded, or holds no samples."""


def probe(path: str | os.PathLike) -> soundfile._SoundFileInfo:  # pylint: disable=protected-access
  """Reads the header only: cheap validation of a file before a long build."""
  if not os.path.isfile(path):
    raise MissingAudioError(path, "audio file not found")
  try:
    info = soundfile.info(str(path))
  except (soundfile.LibsndfileError, RuntimeError, ValueError) as e:
    raise UnreadableAudioError(path, f"cannot read audio header: {e}") from e
  if info.frames <= 0:
    raise UnreadableAudioError(path, "audio file holds no samples")
  return info


def to_mono_16k(samples: np.ndarray, sample_rate: int,
                target_rate: int = SAMPLE_RATE) -> np.ndarray:
  """float[N] or float[N, C] at `sample_rate` -> float32[M] mono at `target_rate`."""
  samples = np.asarray(samples, dtype=np.float32)
  if samples.ndim == 2:
    samples = samples.mean(axis=1, dtype=np.float32)
  elif samples.ndim != 1:
    raise ValueError(f"expected samples of shape [N] or [N, C], got {samples.shape}")
  if sample_rate != target_rate:
    samples = soxr.resample(samples, sample_rate, target_rate)
  return np.ascontiguousarray(samples, dtype=np.float32)


def _decode(source: str | BinaryIO, name: str, target_rate: int) -> np.ndarray:
  try:
    samples, rate = soundfile.read(source, dtype="float32", always_2d=True)
  except (soundfile.LibsndfileError, RuntimeError, ValueError, EOFError) as e:
    raise UnreadableAudioError(name, f"cannot decode audio: {e}") from e
  if samples.shape[0] == 0:
    raise UnreadableAudioError(name, "audio file holds no samples")
  return to_mono_16k(samples, rate, target_rate)


def load_audio(path: str | os.PathLike, target_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Decodes an audio file to float32[N] mono at `target_rate` (16 kHz by default)."""
  if not os.path.isfile(path):
    raise MissingAudioError(path, "audio file not found")
  return _decode(str(path), str(path), target_rate)


def decode_audio_bytes(data: bytes, *, name: str = "<bytes>",
                       target_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Like `load_audio` for an encoded file held in memory; `name` goes into errors."""
  return _decode(io.BytesIO(data), name, target_rate)
