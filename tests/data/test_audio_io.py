"""audio_io: soundfile decoding + soxr resampling to 16 kHz mono, and its errors."""

import numpy as np
import pytest
import soundfile

from cesar_jax.data import audio_io


def _sine(freq: float, rate: int, seconds: float) -> np.ndarray:
  t = np.arange(int(rate * seconds)) / rate
  return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [22_050, 44_100])
@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_stereo_file_becomes_16k_mono_of_the_right_length(tmp_path, rate, fmt):
  seconds = 1.3
  left = _sine(440.0, rate, seconds)
  stereo = np.stack([left, np.zeros_like(left)], axis=1)  # the mono mix is left / 2
  path = tmp_path / f"clip.{fmt.lower()}"
  soundfile.write(path, stereo, rate, format=fmt, subtype="PCM_16")

  audio = audio_io.load_audio(path)

  assert audio.dtype == np.float32 and audio.ndim == 1
  assert audio.shape[0] == round(left.shape[0] * 16_000 / rate)
  # Away from the edges (filter transients) the result is the 440 Hz sine at 16 kHz, halved.
  expected = 0.5 * _sine(440.0, 16_000, seconds)[:audio.shape[0]]
  middle = slice(800, audio.shape[0] - 800)
  np.testing.assert_allclose(audio[middle], expected[middle], atol=2e-3)


def test_16k_mono_float_file_is_returned_unchanged(tmp_path):
  x = np.random.default_rng(0).uniform(-0.9, 0.9, 4000).astype(np.float32)
  path = tmp_path / "clip.wav"
  soundfile.write(path, x, 16_000, subtype="FLOAT")
  np.testing.assert_array_equal(audio_io.load_audio(path), x)
  np.testing.assert_array_equal(audio_io.decode_audio_bytes(path.read_bytes()), x)


def test_missing_file_is_named(tmp_path):
  path = tmp_path / "nope.wav"
  with pytest.raises(audio_io.MissingAudioError, match="nope.wav: audio file not found"):
    audio_io.load_audio(path)
  with pytest.raises(audio_io.MissingAudioError, match="nope.wav"):
    audio_io.probe(path)


def test_unreadable_and_empty_files_are_named(tmp_path):
  garbage = tmp_path / "garbage.wav"
  garbage.write_bytes(b"this is not audio at all" * 10)
  with pytest.raises(audio_io.UnreadableAudioError, match="garbage.wav: cannot"):
    audio_io.load_audio(garbage)
  with pytest.raises(audio_io.UnreadableAudioError, match="garbage.wav"):
    audio_io.probe(garbage)
  empty = tmp_path / "empty.wav"
  soundfile.write(empty, np.zeros((0,), np.float32), 16_000)
  with pytest.raises(audio_io.UnreadableAudioError, match="empty.wav: audio file holds no samples"):
    audio_io.load_audio(empty)
  with pytest.raises(audio_io.UnreadableAudioError, match="bytes-of-x"):
    audio_io.decode_audio_bytes(b"junk" * 50, name="bytes-of-x")
