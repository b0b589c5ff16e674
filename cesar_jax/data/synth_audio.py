"""Waveforms of the synthetic benchmark's events, and their mix into a clip (16 kHz mono).

Events are dicts (see `synth_events.EVENT_KEYS`). Every event is rendered so that its
stated attributes hold exactly in the audio:
- beep / tone: additive synthesis of the stated timbre (sine; band-limited square and
  sawtooth, harmonics below 7.5 kHz so nothing aliases), fundamental = `freq_hz`;
- chirp: exponential sine sweep from `freq_hz` to `freq_end_hz`;
- noise: white Gaussian noise, clipped at 3 sigma (so loud bursts cannot clip the clip);
- speech: `espeak-ng` saying `text`, resampled to 16 kHz with soxr, leading/trailing silence
  trimmed (so onset/offset are where the voice is).
Every event has a 5 ms raised-cosine fade in/out and is scaled to RMS = 10 ** (loudness_db / 20)
(dB relative to full scale). Background noise is white at `min(loudness_db) - snr_db`.

espeak-ng is a system package: `apt-get install -y espeak-ng` (Debian/Ubuntu). Its voice
output depends on its version, so speech items are reproducible per machine image.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16_000
FADE_SECONDS = 0.005
MAX_HARMONIC_HZ = 7_500.0
ESPEAK_INSTALL = "apt-get install -y espeak-ng"


def db_to_rms(loudness_db: float) -> float:
  return float(10.0 ** (loudness_db / 20.0))


def rms(x: np.ndarray) -> float:
  return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _fade(x: np.ndarray) -> np.ndarray:
  n = min(int(FADE_SECONDS * SAMPLE_RATE), x.shape[0] // 2)
  if n > 0:
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)
    x[:n] *= ramp
    x[-n:] *= ramp[::-1]
  return x


def _scale(x: np.ndarray, loudness_db: float) -> np.ndarray:
  level = rms(x)
  if level == 0.0:
    raise ValueError("synth_audio: cannot scale a silent waveform to a loudness")
  return (x * (db_to_rms(loudness_db) / level)).astype(np.float32)


def periodic_wave(freq_hz: float, timbre: str, num: int) -> np.ndarray:
  """Unit-amplitude periodic waveform f64[num]; `timbre` in sine / square / sawtooth."""
  t = np.arange(num) / SAMPLE_RATE
  if timbre == "sine":
    return np.sin(2 * np.pi * freq_hz * t)
  top = int(MAX_HARMONIC_HZ // freq_hz)
  if timbre == "square":
    ks = np.arange(1, top + 1, 2)
    amps = 1.0 / ks
  elif timbre == "sawtooth":
    ks = np.arange(1, top + 1)
    amps = ((-1.0) ** (ks + 1)) / ks
  else:
    raise ValueError(f"synth_audio: unknown timbre {timbre!r} (sine, square, sawtooth)")
  return np.sin(2 * np.pi * freq_hz * t[:, None] * ks[None, :]) @ amps


def chirp_wave(freq_hz: float, freq_end_hz: float, num: int) -> np.ndarray:
  """Exponential sweep f(t) = f0 * (f1 / f0) ** (t / T), f64[num]."""
  duration = num / SAMPLE_RATE
  t = np.arange(num) / SAMPLE_RATE
  log_ratio = np.log(freq_end_hz / freq_hz)
  phase = 2 * np.pi * freq_hz * duration / log_ratio * (np.exp(t / duration * log_ratio) - 1.0)
  return np.sin(phase)


def noise_wave(rng: np.random.Generator, num: int) -> np.ndarray:
  return np.clip(rng.standard_normal(num), -3.0, 3.0)


def espeak_available() -> bool:
  return shutil.which("espeak-ng") is not None


@functools.lru_cache(maxsize=512)
def speech_wave(text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50) -> np.ndarray:
  """`espeak-ng` saying `text`: f32[N] at 16 kHz, peak-normalised, silence trimmed (cached per text)."""
  if not espeak_available():
    raise RuntimeError(f"speech events need espeak-ng (text {text!r}); install it with `{ESPEAK_INSTALL}`, "
                       "or restrict question types to ones without speech")
  cmd = ["espeak-ng", "--stdout", "-v", voice, "-s", str(speed), "-p", str(pitch), text]
  proc = subprocess.run(cmd, capture_output=True, check=False)
  if proc.returncode != 0 or not proc.stdout:
    raise RuntimeError(f"espeak-ng failed for text {text!r} (command {cmd}): {proc.stderr.decode(errors='replace')}")
  wave, rate = soundfile.read(io.BytesIO(proc.stdout), dtype="float32")
  wave = soxr.resample(wave, rate, SAMPLE_RATE).astype(np.float32)
  peak = np.max(np.abs(wave))
  if peak == 0.0:
    raise RuntimeError(f"espeak-ng produced silence for text {text!r}")
  wave /= peak
  # Trim to where the voice is: first/last 10 ms frame with RMS above 2% of the peak.
  frame = SAMPLE_RATE // 100
  n = wave.shape[0] // frame * frame
  frame_rms = np.sqrt(np.mean(np.square(wave[:n].reshape(-1, frame)), axis=1))
  loud = np.nonzero(frame_rms > 0.02)[0]
  wave = wave[loud[0] * frame:(loud[-1] + 1) * frame].copy()
  wave.flags.writeable = False
  return wave


def event_wave(event: dict, rng: np.random.Generator) -> np.ndarray:
  """The event's waveform f32[round((offset_s - onset_s) * 16 kHz)], scaled to its loudness."""
  num = int(round((event["offset_s"] - event["onset_s"]) * SAMPLE_RATE))
  kind = event["kind"]
  if kind in ("beep", "tone"):
    x = periodic_wave(event["freq_hz"], event["timbre"], num)
  elif kind == "chirp":
    x = chirp_wave(event["freq_hz"], event["freq_end_hz"], num)
  elif kind == "noise":
    x = noise_wave(rng, num)
  elif kind == "speech":
    x = np.array(speech_wave(event["text"]), np.float64)
    if x.shape[0] != num:
      raise ValueError(f"speech event {event['text']!r}: window holds {num} samples, the voice {x.shape[0]}")
    return _scale(x, event["loudness_db"])  # already trimmed to the voice; no fade
  else:
    raise ValueError(f"synth_audio: unknown event kind {kind!r} in {event}")
  return _scale(_fade(x), event["loudness_db"])


def render(events: list[dict], clip_seconds: float, rng: np.random.Generator,
           snr_db: float | None) -> np.ndarray:
  """Mixes non-overlapping events into a clip f32[clip_seconds * 16 kHz] with background noise.

  Background: white noise at RMS `min(event loudness_db) - snr_db` dBFS (None: silence), so every
  event is at least `snr_db` above the noise floor.
  """
  total = int(round(clip_seconds * SAMPLE_RATE))
  clip = np.zeros((total,), np.float32)
  for event in events:
    start = int(round(event["onset_s"] * SAMPLE_RATE))
    wave = event_wave(event, rng)
    if start < 0 or start + wave.shape[0] > total:
      raise ValueError(f"event {event} does not fit in a {clip_seconds} s clip")
    clip[start:start + wave.shape[0]] += wave
  if snr_db is not None and events:
    floor_db = min(e["loudness_db"] for e in events) - snr_db
    clip += (rng.standard_normal(total) * db_to_rms(floor_db)).astype(np.float32)
  peak = float(np.max(np.abs(clip))) if total else 0.0
  if peak > 1.0:
    raise ValueError(f"synthetic clip peaks at {peak:.3f} > 1 (events {events}): lower the loudness range")
  return clip
