"""Events of the synthetic benchmark: vocabulary, attribute sampling, layout in a clip, options.

An event is a dict with exactly `EVENT_KEYS`:
  kind        beep | tone | chirp | noise | speech
  onset_s     start, seconds (a whole sample: onset_s * 16000 is an integer)
  offset_s    end, seconds
  freq_hz     beep/tone: fundamental; chirp: start frequency; otherwise 0.0
  freq_end_hz chirp: end frequency (rising iff > freq_hz); otherwise 0.0
  timbre      beep/tone: sine | square | sawtooth; chirp: sine; otherwise ""
  loudness_db RMS level in dB relative to full scale
  text        speech: the word spoken; otherwise ""
Events of a clip never overlap and are listed in time order.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from cesar_jax.data import synth_audio
from cesar_jax.data import traces as tr

SAMPLE_RATE = synth_audio.SAMPLE_RATE
EVENT_KEYS = ("kind", "onset_s", "offset_s", "freq_hz", "freq_end_hz", "timbre", "loudness_db", "text")
KINDS = ("beep", "tone", "chirp", "noise", "speech")
NON_SPEECH_KINDS = ("beep", "tone", "chirp", "noise")
TIMBRES = ("sine", "square", "sawtooth")
# Equal-tempered semitones A3 (220 Hz) .. A5 (880 Hz), rounded to whole Hz (the audio uses these exactly).
TONE_GRID = tuple(int(round(220 * 2 ** (k / 12))) for k in range(25))
BEEP_FREQS = (1000, 1200, 1500)
CHIRP_FREQS = (250, 500, 1000, 2000)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COLOR_WORDS = ("red", "green", "blue", "yellow", "black", "white")
LOUD_THRESHOLD_DB = tr.LOUD_THRESHOLD_DB
LOUD_RANGE_DB = (-14.0, -10.0)
SOFT_RANGE_DB = (-34.0, -28.0)
SPEECH_RANGE_DB = (-24.0, -18.0)
EDGE_S = 0.1  # silence kept at both ends of a clip
MIN_GAP_S = 0.15  # silence between consecutive events


@dataclasses.dataclass(frozen=True)
class SynthOptions:
  """Knobs of `synthetic.generate` (all keyword options of it)."""
  question_types: tuple[str, ...] | None = None  # None: all (of `tasks`)
  tasks: tuple[str, ...] | None = None  # subset of sound / music / speech
  clip_seconds: float = 4.0
  snr_db: float | tuple[float, float] | None = (20.0, 30.0)  # fixed, uniform range, or no noise
  loudness_db: tuple[float, float] = (-26.0, -14.0)  # level range of ordinary events
  max_count: int = 5  # counting questions: counts 1..max_count
  min_semitones: int = 1  # pitch comparison: smallest interval (raise for easier items)
  trace_times: bool = True  # event sentences say "between T s and T s"
  hallucination_rate: float = 0.0
  inconsistent_rate: float = 0.0
  rambling_rate: float = 0.0
  with_audio: bool = True  # False: text only (no synthesis; `audio` is None)

  def __post_init__(self):
    rates = (self.hallucination_rate, self.inconsistent_rate, self.rambling_rate)
    if min(rates) < 0 or sum(rates) > 1:
      raise ValueError(f"SynthOptions: corruption rates {rates} must be >= 0 and sum to <= 1")
    if self.clip_seconds <= 1.0:
      raise ValueError(f"SynthOptions: clip_seconds={self.clip_seconds} is too short (> 1 s)")
    if self.max_count < 2:
      raise ValueError(f"SynthOptions: max_count={self.max_count} must be >= 2")
    if not 1 <= self.min_semitones <= 12:
      raise ValueError(f"SynthOptions: min_semitones={self.min_semitones} must be in 1..12")


def _event(kind: str, duration_s: float, loudness_db: float, *, freq_hz: float = 0.0, freq_end_hz: float = 0.0,
           timbre: str = "", text: str = "") -> dict:
  """An event before layout: `duration_s` instead of onset/offset."""
  return dict(kind=kind, duration_s=duration_s, freq_hz=float(freq_hz), freq_end_hz=float(freq_end_hz),
              timbre=timbre, loudness_db=float(round(loudness_db, 1)), text=text)


def _centiseconds(rng: np.random.Generator, lo: float, hi: float) -> float:
  return int(rng.integers(round(lo * 100), round(hi * 100) + 1)) / 100


def level(rng: np.random.Generator, opts: SynthOptions, which: str | None = None) -> float:
  lo, hi = {None: opts.loudness_db, "loud": LOUD_RANGE_DB, "soft": SOFT_RANGE_DB}[which]
  return float(rng.uniform(lo, hi))


def beep(rng, opts, *, loudness: str | None = None) -> dict:
  return _event("beep", _centiseconds(rng, 0.10, 0.15), level(rng, opts, loudness),
                freq_hz=BEEP_FREQS[rng.integers(len(BEEP_FREQS))], timbre="sine")


def tone(rng, opts, *, freq_hz: float | None = None, timbre: str | None = None, loudness: str | None = None) -> dict:
  freq_hz = TONE_GRID[rng.integers(len(TONE_GRID))] if freq_hz is None else freq_hz
  timbre = TIMBRES[rng.integers(len(TIMBRES))] if timbre is None else timbre
  return _event("tone", _centiseconds(rng, 0.30, 0.60), level(rng, opts, loudness), freq_hz=freq_hz, timbre=timbre)


def chirp(rng, opts, *, direction: str | None = None, loudness: str | None = None) -> dict:
  f0, f1 = (CHIRP_FREQS[i] for i in rng.choice(len(CHIRP_FREQS), 2, replace=False))
  direction = direction or ("rising" if rng.random() < 0.5 else "falling")
  lo, hi = sorted((f0, f1))
  f0, f1 = (lo, hi) if direction == "rising" else (hi, lo)
  return _event("chirp", _centiseconds(rng, 0.40, 0.70), level(rng, opts, loudness),
                freq_hz=f0, freq_end_hz=f1, timbre="sine")


def noise(rng, opts, *, loudness: str | None = None) -> dict:
  return _event("noise", _centiseconds(rng, 0.20, 0.50), level(rng, opts, loudness))


def speech(rng, opts, text: str) -> dict:
  del opts
  samples = synth_audio.speech_wave(text).shape[0]
  return _event("speech", samples / SAMPLE_RATE, float(rng.uniform(*SPEECH_RANGE_DB)), text=text)


def random_event(rng: np.random.Generator, opts: SynthOptions, kind: str) -> dict:
  if kind == "speech":
    return speech(rng, opts, NUMBER_WORDS[rng.integers(len(NUMBER_WORDS))])
  return {"beep": beep, "tone": tone, "chirp": chirp, "noise": noise}[kind](rng, opts)


def duration_samples(event: dict) -> int:
  return int(round(event["duration_s"] * SAMPLE_RATE))


def _placed(event: dict, start: int) -> dict:
  """Replaces `duration_s` by onset_s/offset_s at sample `start`; keys in EVENT_KEYS order."""
  end = start + duration_samples(event)
  out = dict(event, onset_s=start / SAMPLE_RATE, offset_s=end / SAMPLE_RATE)
  return {k: out[k] for k in EVENT_KEYS}


def layout(drafts: list[dict], clip_seconds: float, rng: np.random.Generator, *, what: str) -> list[dict]:
  """Places events in order, separated by >= MIN_GAP_S, with random spare silence; onsets on 10 ms steps."""
  total = sum(duration_samples(e) for e in drafts) / SAMPLE_RATE
  slack = clip_seconds - 2 * EDGE_S - total - (len(drafts) - 1) * MIN_GAP_S
  if slack < 0:
    raise ValueError(f"{what}: {len(drafts)} events ({total:.2f} s of sound) do not fit in a "
                     f"{clip_seconds} s clip; use a longer clip_seconds")
  extra = slack * rng.dirichlet(np.ones(len(drafts) + 1))
  placed, cursor = [], EDGE_S
  for event, spare in zip(drafts, extra):
    start = math.floor((cursor + spare) * 100) * (SAMPLE_RATE // 100)
    placed.append(_placed(event, start))
    cursor = placed[-1]["offset_s"] + MIN_GAP_S
  return placed


def place_at(drafts: list[dict], onsets_s: list[float]) -> list[dict]:
  """Places events at given onsets (rounded to whole samples)."""
  return [_placed(e, int(round(t * SAMPLE_RATE))) for e, t in zip(drafts, onsets_s)]


def by_kind(events: list[dict], kind: str) -> list[dict]:
  return [e for e in events if e["kind"] == kind]


def free_gaps(events: list[dict], clip_seconds: float) -> list[tuple[float, float]]:
  """Silent stretches (start, end) where a new event could go: >= MIN_GAP_S from events, EDGE_S from the ends."""
  gaps, lo = [], EDGE_S
  for e in events:
    if e["onset_s"] - MIN_GAP_S > lo:
      gaps.append((lo, e["onset_s"] - MIN_GAP_S))
    lo = max(lo, e["offset_s"] + MIN_GAP_S)
  if clip_seconds - EDGE_S > lo:
    gaps.append((lo, clip_seconds - EDGE_S))
  return gaps
