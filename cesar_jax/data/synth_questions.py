"""Question types of the synthetic benchmark (MMAU-shaped multiple choice with ground truth).

Each type draws an item in a fixed order that leaves no text-only shortcut:
1. the option set (independent of the answer), 2. the answer, uniformly among the options,
3. events that make that answer true, laid out in the clip. The question wording is drawn
independently of the answer. Options are shuffled later (`synthetic.py`).

`derive(spec, events)` recomputes the answer from a list of events together with the
reasoning claims that lead to it (`traces` grammar). The generator checks that it returns
the drawn answer; corrupted traces call it on altered events.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import numpy as np

from cesar_jax.data import synth_events as ev
from cesar_jax.data import traces as tr

IE, REASONING = "Information Extraction", "Reasoning"


@dataclasses.dataclass(frozen=True)
class Draft:
  spec: dict  # type parameters; "level_words": True makes event sentences say loud/soft
  templates: tuple[str, ...]  # answer-invariant phrasings of the question
  choices: tuple[str, ...]  # the option set, unshuffled
  answer: str
  events: list[dict]  # placed, EVENT_KEYS
  difficulty: str  # easy | medium | hard


Derive = Callable[[dict, list[dict]], tuple[list[tr.Sentence], str]]


@dataclasses.dataclass(frozen=True)
class QuestionType:
  name: str
  task: str  # sound | music | speech
  category: str
  sub_category: str
  sample: Callable[[np.random.Generator, ev.SynthOptions], Draft]
  derive: Derive
  needs_speech: bool = False


def _window(rng: np.random.Generator, lo: int, hi: int, k: int) -> list[int]:
  """k consecutive integers inside [lo, hi], the start uniform."""
  k = min(k, hi - lo + 1)
  start = int(rng.integers(lo, hi - k + 2))
  return list(range(start, start + k))


def _pick(rng: np.random.Generator, seq, k: int) -> list:
  return [seq[i] for i in sorted(rng.choice(len(seq), min(k, len(seq)), replace=False))]


def _choice(rng: np.random.Generator, seq):
  return seq[int(rng.integers(len(seq)))]


def _shuffled(rng: np.random.Generator, items: list) -> list:
  return [items[i] for i in rng.permutation(len(items))]


def _layout(rng, opts, drafts, name):
  return ev.layout(drafts, opts.clip_seconds, rng, what=f"question type {name!r}")


# Counting ------------------------------------------------------------------------------------

def _count_templates(kind: str) -> tuple[str, ...]:
  p = tr.plural(kind)
  return (f"How many {p} are in the clip?", f"How many {p} can you hear?",
          f"Count the {p} in the recording. How many are there?", f"What is the number of {p} you hear?")


def _derive_count(spec, events):
  n = len(ev.by_kind(events, spec["kind"]))
  return [tr.CountClaim(spec["kind"], n)], str(n)


def _count_difficulty(num_events: int) -> str:
  return "easy" if num_events <= 2 else ("medium" if num_events <= 4 else "hard")


def _sample_count_beeps(rng, opts):
  window = _window(rng, 1, opts.max_count, 4)
  n = _choice(rng, window)
  events = _layout(rng, opts, [ev.beep(rng, opts) for _ in range(n)], "count_beeps")
  return Draft({"kind": "beep"}, _count_templates("beep"), tuple(map(str, window)), str(n), events,
               _count_difficulty(n))


def _sample_count(rng, opts):
  kind = _choice(rng, ("beep", "chirp", "noise"))
  window = _window(rng, 1, opts.max_count if kind == "beep" else min(3, opts.max_count), 4)
  n = _choice(rng, window)
  others = [k for k in ev.NON_SPEECH_KINDS if k != kind]
  num_distractors = int(rng.integers(1, 3 if kind == "beep" else 2))
  drafts = [ev.random_event(rng, opts, kind) for _ in range(n)]
  drafts += [ev.random_event(rng, opts, _choice(rng, others)) for _ in range(num_distractors)]
  events = _layout(rng, opts, _shuffled(rng, drafts), "count")
  return Draft({"kind": kind}, _count_templates(kind), tuple(map(str, window)), str(n), events,
               "hard" if len(events) >= 5 else "medium")


def _sample_presence(rng, opts):
  kind = _choice(rng, ev.NON_SPEECH_KINDS)
  answer = _choice(rng, ("yes", "no"))
  others = [k for k in ev.NON_SPEECH_KINDS if k != kind]
  drafts = [ev.random_event(rng, opts, kind) for _ in range(int(rng.integers(1, 3)) if answer == "yes" else 0)]
  drafts += [ev.random_event(rng, opts, _choice(rng, others)) for _ in range(int(rng.integers(1, 3)))]
  noun = tr.NOUNS[kind]
  templates = (f"Is there a {noun} in the clip?", f"Can you hear a {noun} in the recording?",
               f"Does the clip contain a {noun}?")
  return Draft({"kind": kind}, templates, ("yes", "no"), answer,
               _layout(rng, opts, _shuffled(rng, drafts), "presence"), "easy")


def _derive_presence(spec, events):
  claims, n = _derive_count(spec, events)
  return claims, "yes" if int(n) > 0 else "no"


def _sample_count_after(rng, opts):
  anchor = _choice(rng, ("chirp", "noise"))
  window = _window(rng, 0, min(4, opts.max_count), 4)
  n = _choice(rng, window)
  before = int(rng.integers(0, 3))
  drafts = [ev.beep(rng, opts) for _ in range(before)] + [ev.random_event(rng, opts, anchor)]
  drafts += [ev.beep(rng, opts) for _ in range(n)]
  a = tr.NOUNS[anchor]
  templates = (f"How many beeps come after the {a}?", f"How many beeps do you hear after the {a}?",
               f"Count the beeps that follow the {a}. How many are there?")
  return Draft({"kind": "beep", "anchor": anchor}, templates, tuple(map(str, window)), str(n),
               _layout(rng, opts, drafts, "count_after"), "hard")


def _derive_count_after(spec, events):
  anchors = ev.by_kind(events, spec["anchor"])
  t = anchors[0]["offset_s"] if anchors else float("inf")
  n = sum(1 for e in ev.by_kind(events, spec["kind"]) if e["onset_s"] >= t)
  return [tr.CountAfterClaim(spec["kind"], spec["anchor"], n)], str(n)


# Order and loudness ---------------------------------------------------------------------------

def _order_text(kinds) -> str:
  return ", then ".join(tr.NOUNS[k] for k in kinds)


def _sample_order(rng, opts):
  kinds = _pick(rng, ev.NON_SPEECH_KINDS, 3)
  perms = list(itertools.permutations(kinds))
  options = _pick(rng, perms, 4)
  answer = _choice(rng, options)
  events = _layout(rng, opts, [ev.random_event(rng, opts, k) for k in answer], "order")
  templates = ("In what order do the sounds occur?", "What is the order of the sounds in the clip?",
               "Which sequence matches the order of the sounds you hear?")
  return Draft({}, templates, tuple(_order_text(p) for p in options), _order_text(answer), events, "medium")


def _derive_order(spec, events):
  del spec
  kinds = tuple(e["kind"] for e in events)
  return [tr.OrderClaim(kinds)], _order_text(kinds)


def _sample_loudness(rng, opts):
  kind = _choice(rng, ("tone", "noise", "beep"))
  answer = _choice(rng, ("louder", "softer"))
  levels = ("soft", "loud") if answer == "louder" else ("loud", "soft")
  maker = {"tone": ev.tone, "noise": ev.noise, "beep": ev.beep}[kind]
  drafts = [maker(rng, opts, loudness=lv) for lv in levels]
  noun = tr.NOUNS[kind]
  templates = (f"Is the second {noun} louder or softer than the first?",
               f"Compared to the first {noun}, is the second {noun} louder or softer?",
               f"Does the second {noun} sound louder or softer than the first one?")
  return Draft({"kind": kind, "level_words": True}, templates, ("louder", "softer"), answer,
               _layout(rng, opts, drafts, "loudness"), "easy")


def _derive_loudness(spec, events):
  items = ev.by_kind(events, spec["kind"])
  rel = "louder" if len(items) > 1 and items[1]["loudness_db"] > items[0]["loudness_db"] else "softer"
  return [tr.CompareClaim(spec["kind"], "second", rel, "first")], rel


# Music -----------------------------------------------------------------------------------------

def _sample_pitch_compare(rng, opts):
  semis = int(rng.integers(opts.min_semitones, 13))
  answer = _choice(rng, ("higher", "lower"))
  low = int(rng.integers(0, len(ev.TONE_GRID) - semis))
  i1, i2 = (low, low + semis) if answer == "higher" else (low + semis, low)
  timbre = _choice(rng, ev.TIMBRES)
  drafts = [ev.tone(rng, opts, freq_hz=ev.TONE_GRID[i], timbre=timbre) for i in (i1, i2)]
  templates = ("Is the second tone higher or lower in pitch than the first?",
               "Compared to the first tone, is the second tone higher or lower?",
               "Does the pitch go higher or lower from the first tone to the second?")
  difficulty = "easy" if semis >= 7 else ("medium" if semis >= 3 else "hard")
  return Draft({"kind": "tone"}, templates, ("higher", "lower"), answer,
               _layout(rng, opts, drafts, "pitch_compare"), difficulty)


def _derive_pitch_compare(spec, events):
  tones = ev.by_kind(events, spec["kind"])
  rel = "higher" if len(tones) > 1 and tones[1]["freq_hz"] > tones[0]["freq_hz"] else "lower"
  return [tr.CompareClaim(spec["kind"], "second", rel, "first")], rel


_MOVE_WORD = {"rises": "rising", "falls": "falling"}
CONTOURS = ("rising", "falling", "rising then falling", "falling then rising")


def _moves(freqs: list[float]) -> tuple[str, ...]:
  moves = []
  for a, b in zip(freqs[:-1], freqs[1:]):
    m = "rises" if b > a else "falls"
    if not moves or moves[-1] != m:
      moves.append(m)
  return tuple(moves)


def _sample_contour(rng, opts):
  options = _pick(rng, CONTOURS, int(rng.integers(3, 5)))
  answer = _choice(rng, options)
  n = int(rng.integers(3, 5))
  turn = int(rng.integers(1, n - 1))  # index of the peak / trough for two-move shapes
  signs = {"rising": [1] * (n - 1), "falling": [-1] * (n - 1),
           "rising then falling": [1] * turn + [-1] * (n - 1 - turn),
           "falling then rising": [-1] * turn + [1] * (n - 1 - turn)}[answer]
  steps = np.array(signs) * rng.integers(2, 6, size=n - 1)
  path = np.concatenate([[0], np.cumsum(steps)])
  start = int(rng.integers(-path.min(), len(ev.TONE_GRID) - path.max()))
  timbre = _choice(rng, ev.TIMBRES)
  drafts = [ev.tone(rng, opts, freq_hz=ev.TONE_GRID[start + p], timbre=timbre) for p in path]
  templates = ("What is the melodic contour of the tones?", "How does the pitch of the melody move?",
               "Which shape describes the melody formed by the tones?")
  return Draft({"kind": "tone"}, templates, tuple(options), answer, _layout(rng, opts, drafts, "contour"), "medium")


def _derive_contour(spec, events):
  moves = _moves([e["freq_hz"] for e in ev.by_kind(events, spec["kind"])])
  return [tr.ContourClaim(moves)], " then ".join(_MOVE_WORD[m] for m in moves)


_TIMBRE_ADJ = {"sine": "pure", "square": "hollow", "sawtooth": "bright"}


def _sample_timbre(rng, opts):
  answer = _choice(rng, ev.TIMBRES)
  drafts = [ev.tone(rng, opts, timbre=answer)]
  if rng.random() < 0.5:
    drafts.insert(int(rng.integers(0, 2)), ev.beep(rng, opts))
  templates = ("What is the timbre of the tone?", "Which waveform does the tone sound like?",
               "How would you describe the timbre of the tone?")
  return Draft({"kind": "tone"}, templates, tuple(f"{t} wave" for t in ev.TIMBRES), f"{answer} wave",
               _layout(rng, opts, drafts, "timbre"), "medium")


def _derive_timbre(spec, events):
  tones = ev.by_kind(events, spec["kind"])
  t = tones[0]["timbre"] if tones else "sine"
  return [tr.Statement(f"A {t} tone has a {_TIMBRE_ADJ[t]} timbre.")], f"{t} wave"


TEMPOS_BPM = (60, 90, 120, 150, 180)


def _sample_tempo(rng, opts):
  span = opts.clip_seconds - 2 * ev.EDGE_S - 0.15
  fits = [b for b in TEMPOS_BPM if int(span // (60 / b)) + 1 >= 3]
  if len(fits) < 2:
    raise ValueError(f"question type 'tempo': clip_seconds={opts.clip_seconds} is too short for 3 beats")
  options = _pick(rng, fits, 3)
  bpm = _choice(rng, options)
  ioi = 60 / bpm
  n = min(int(rng.integers(4, 7)), int(span // ioi) + 1)
  first = ev.beep(rng, opts)
  drafts = [first] * n  # identical beeps
  t0 = rng.uniform(ev.EDGE_S, opts.clip_seconds - ev.EDGE_S - (n - 1) * ioi - first["duration_s"])
  events = ev.place_at(drafts, [t0 + k * ioi for k in range(n)])
  templates = ("What is the tempo of the beeps?", "How fast are the beeps, in beats per minute?",
               "At what tempo do the beeps repeat?")
  return Draft({"kind": "beep"}, templates, tuple(f"{b} BPM" for b in options), f"{bpm} BPM", events, "medium")


def _derive_tempo(spec, events):
  onsets = [e["onset_s"] for e in ev.by_kind(events, spec["kind"])]
  ioi = float(np.median(np.diff(onsets))) if len(onsets) > 1 else 60.0
  bpm = int(round(60 / ioi))
  return [tr.TempoClaim(ioi, bpm)], f"{bpm} BPM"


def _sample_last_vs_first(rng, opts):
  answer = _choice(rng, ("yes", "no"))
  n = int(rng.integers(3, 5))
  idx = list(rng.choice(len(ev.TONE_GRID), n, replace=False))
  if (idx[-1] > idx[0]) != (answer == "yes"):
    idx[0], idx[-1] = idx[-1], idx[0]
  timbre = _choice(rng, ev.TIMBRES)
  drafts = [ev.tone(rng, opts, freq_hz=ev.TONE_GRID[i], timbre=timbre) for i in idx]
  templates = ("Is the last tone higher in pitch than the first tone?",
               "Is the final tone higher than the first one?",
               "Comparing the first and the last tone, is the last one higher?")
  return Draft({"kind": "tone"}, templates, ("yes", "no"), answer, _layout(rng, opts, drafts, "last_vs_first"), "hard")


def _derive_last_vs_first(spec, events):
  tones = ev.by_kind(events, spec["kind"])
  higher = len(tones) > 1 and tones[-1]["freq_hz"] > tones[0]["freq_hz"]
  return [tr.CompareClaim(spec["kind"], "last", "higher" if higher else "lower", "first")], "yes" if higher else "no"


# Speech ------------------------------------------------------------------------------------------

def _sample_spoken(words, templates, name):
  def sample(rng, opts):
    options = _pick(rng, words, 4)
    answer = _choice(rng, options)
    drafts = [ev.speech(rng, opts, answer)]
    if rng.random() < 0.5:
      drafts.insert(int(rng.integers(0, 2)), ev.beep(rng, opts))
    return Draft({}, templates, tuple(options), answer, _layout(rng, opts, drafts, name), "easy")
  return sample


def _derive_spoken(spec, events):
  del spec
  voices = ev.by_kind(events, "speech")
  return [], voices[0]["text"] if voices else ""


def _sample_number_after_beep(rng, opts):
  options = _pick(rng, ev.NUMBER_WORDS, 4)
  answer = _choice(rng, options)
  before = _choice(rng, [w for w in options if w != answer])
  drafts = [ev.speech(rng, opts, before), ev.beep(rng, opts), ev.speech(rng, opts, answer)]
  templates = ("Which number is spoken after the beep?", "What number does the speaker say after the beep?",
               "After the beep, which number do you hear?")
  return Draft({"anchor": "beep"}, templates, tuple(options), answer,
               _layout(rng, opts, drafts, "number_after_beep"), "medium")


def _derive_number_after_beep(spec, events):
  anchors = ev.by_kind(events, spec["anchor"])
  t = anchors[0]["offset_s"] if anchors else float("inf")
  after = [e["text"] for e in ev.by_kind(events, "speech") if e["onset_s"] >= t]
  text = after[0] if after else ""
  return ([tr.SpeechAfterClaim(spec["anchor"], text)] if text else []), text


def _sample_spoken_sum(rng, opts):
  window = _window(rng, 0, 18, 4)
  total = _choice(rng, window)
  a = int(rng.integers(max(0, total - 9), min(9, total) + 1))
  drafts = [ev.speech(rng, opts, ev.NUMBER_WORDS[a]), ev.speech(rng, opts, ev.NUMBER_WORDS[total - a])]
  templates = ("What is the sum of the two spoken numbers?", "If you add the two numbers you hear, what do you get?",
               "What do the two spoken numbers add up to?")
  return Draft({}, templates, tuple(map(str, window)), str(total), _layout(rng, opts, drafts, "spoken_sum"), "hard")


def _derive_spoken_sum(spec, events):
  del spec
  words = [e["text"] for e in ev.by_kind(events, "speech") if e["text"] in ev.NUMBER_WORDS][:2]
  if len(words) < 2:
    return [], ""
  a, b = (ev.NUMBER_WORDS.index(w) for w in words)
  return [tr.Statement(f"{words[0].capitalize()} plus {words[1]} is {a + b}.")], str(a + b)


_NUMBER_TEMPLATES = ("Which number does the speaker say?", "What number is spoken in the clip?",
                     "Which number do you hear?")
_COLOR_TEMPLATES = ("Which color does the speaker name?", "What color is spoken in the clip?",
                    "Which color word do you hear?")

QUESTION_TYPES: dict[str, QuestionType] = {q.name: q for q in (
    QuestionType("count_beeps", "sound", IE, "Event Counting", _sample_count_beeps, _derive_count),
    QuestionType("count", "sound", IE, "Event Counting", _sample_count, _derive_count),
    QuestionType("presence", "sound", IE, "Event Detection", _sample_presence, _derive_presence),
    QuestionType("order", "sound", REASONING, "Temporal Ordering", _sample_order, _derive_order),
    QuestionType("loudness", "sound", IE, "Loudness Comparison", _sample_loudness, _derive_loudness),
    QuestionType("count_after", "sound", REASONING, "Temporal Counting", _sample_count_after, _derive_count_after),
    QuestionType("pitch_compare", "music", IE, "Pitch Comparison", _sample_pitch_compare, _derive_pitch_compare),
    QuestionType("contour", "music", REASONING, "Melodic Contour", _sample_contour, _derive_contour),
    QuestionType("timbre", "music", IE, "Timbre", _sample_timbre, _derive_timbre),
    QuestionType("tempo", "music", REASONING, "Tempo", _sample_tempo, _derive_tempo),
    QuestionType("last_vs_first", "music", REASONING, "Pitch Reasoning", _sample_last_vs_first,
                 _derive_last_vs_first),
    QuestionType("spoken_number", "speech", IE, "Speech Content",
                 _sample_spoken(ev.NUMBER_WORDS, _NUMBER_TEMPLATES, "spoken_number"), _derive_spoken, True),
    QuestionType("spoken_word", "speech", IE, "Speech Content",
                 _sample_spoken(ev.COLOR_WORDS, _COLOR_TEMPLATES, "spoken_word"), _derive_spoken, True),
    QuestionType("number_after_beep", "speech", REASONING, "Temporal Reasoning", _sample_number_after_beep,
                 _derive_number_after_beep, True),
    QuestionType("spoken_sum", "speech", REASONING, "Arithmetic", _sample_spoken_sum, _derive_spoken_sum, True),
)}
