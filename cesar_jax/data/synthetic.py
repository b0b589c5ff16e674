"""The procedural audio-reasoning benchmark: MMAU-shaped multiple choice with ground truth.

    for item in generate("train", 1000, seed=0, question_types=("count_beeps", "pitch_compare")):
      item["audio"]     # f32[clip_seconds * 16000], 16 kHz mono
      item["question"], item["choices"], item["answer"]  # answer: the correct option's text
      item["events"]    # ground truth: [{kind, onset_s, offset_s, freq_hz, ...}] (synth_events.py)
      item["trace"]     # "<think>First, I hear ...</think><answer>...</answer>" (traces.py grammar)

Every item is a pure function of (split, seed, index, options): a numpy Generator seeded
from SeedSequence([split id, seed, index]) spawns separate streams for the question, the
audio and the trace, so the text does not depend on whether audio is synthesised and any
item can be rebuilt alone. Splits use disjoint streams (split id 0 / 1 / 2).

Item fields: id, audio (None when with_audio=False), question, choices (2-5 option texts,
shuffled; the answer's position is uniform), answer, task (sound / music / speech),
category ("Information Extraction" / "Reasoning"), sub_category, difficulty
(easy / medium / hard), events, trace, corruption (none / hallucination / inconsistent /
rambling), rewordings (answer-invariant rewordings of the question: CESAR's T_k(q, C)),
plus question_type, trace_answer (the option the trace answers) and snr_db (None: no noise).

Question types (synth_questions.QUESTION_TYPES): sound: count_beeps, count, presence, order,
loudness, count_after; music: pitch_compare, contour, timbre, tempo, last_vs_first;
speech: spoken_number, spoken_word, number_after_beep, spoken_sum (these need the system
package espeak-ng: `apt-get install -y espeak-ng`; without it pass tasks=("sound", "music")).

For a tiny CPU model: question_types=DEMO_QUESTION_TYPES (counting beeps, pitch comparison;
labels balanced), min_semitones=5, trace_times=False (traces of ~50 tokens instead of ~90).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from cesar_jax.data import synth_audio
from cesar_jax.data import synth_events as ev
from cesar_jax.data import synth_questions as sq
from cesar_jax.data import synth_traces as st

SPLITS = {"train": 0, "validation": 1, "test": 2}
SynthOptions = ev.SynthOptions
QUESTION_TYPES = sq.QUESTION_TYPES
CORRUPTIONS = st.CORRUPTIONS
DEMO_QUESTION_TYPES = ("count_beeps", "pitch_compare")


def make_options(**options) -> SynthOptions:
  """SynthOptions from keyword options, naming any unknown key."""
  fields = {f.name for f in dataclasses.fields(SynthOptions)}
  unknown = sorted(set(options) - fields)
  if unknown:
    raise TypeError(f"synthetic.generate: unknown option(s) {unknown}; known: {sorted(fields)}")
  for key in ("question_types", "tasks"):
    if isinstance(options.get(key), str):
      options[key] = (options[key],)
    if options.get(key) is not None:
      options[key] = tuple(options[key])
  if isinstance(options.get("snr_db"), list):
    options["snr_db"] = tuple(options["snr_db"])
  return SynthOptions(**options)


def selected_types(opts: SynthOptions) -> list[sq.QuestionType]:
  names = opts.question_types or tuple(QUESTION_TYPES)
  unknown = [n for n in names if n not in QUESTION_TYPES]
  if unknown:
    raise ValueError(f"synthetic: unknown question type(s) {unknown}; known: {sorted(QUESTION_TYPES)}")
  types = [QUESTION_TYPES[n] for n in names if opts.tasks is None or QUESTION_TYPES[n].task in opts.tasks]
  if not types:
    raise ValueError(f"synthetic: no question type left for question_types={opts.question_types}, tasks={opts.tasks}")
  if any(q.needs_speech for q in types) and not synth_audio.espeak_available():
    raise RuntimeError(f"synthetic: speech question types need espeak-ng (`{synth_audio.ESPEAK_INSTALL}`); "
                       "or pass tasks=('sound', 'music')")
  return types


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"synthetic: unknown split {split!r}; one of {list(SPLITS)}")


def _streams(split: str, seed: int, index: int) -> list[np.random.Generator]:
  _check_split(split)
  seq = np.random.SeedSequence([SPLITS[split], int(seed), int(index)])
  return [np.random.default_rng(s) for s in seq.spawn(3)]  # question, audio, trace


def _pick_type(rng: np.random.Generator, types: list[sq.QuestionType]) -> sq.QuestionType:
  """Task uniform among the selected tasks, then type uniform within the task."""
  tasks = sorted({q.task for q in types})
  task = tasks[int(rng.integers(len(tasks)))]
  in_task = [q for q in types if q.task == task]
  return in_task[int(rng.integers(len(in_task)))]


def _rewordings(templates: tuple[str, ...], used: int) -> list[str]:
  question = templates[used]
  lowered = question[0].lower() + question[1:]
  return [t for i, t in enumerate(templates) if i != used] + [
      f"Listen to the audio clip. {question}", f"Based on what you hear, {lowered}"]


def _corruption(rng: np.random.Generator, opts: SynthOptions) -> str:
  rates = [opts.hallucination_rate, opts.inconsistent_rate, opts.rambling_rate]
  return str(rng.choice(CORRUPTIONS, p=[1.0 - sum(rates)] + rates))


def _snr(rng: np.random.Generator, opts: SynthOptions) -> float | None:
  if opts.snr_db is None:
    return None
  if isinstance(opts.snr_db, tuple):
    return float(round(rng.uniform(*opts.snr_db), 1))
  return float(opts.snr_db)


def _draft(split: str, seed: int, index: int, opts: SynthOptions, types: list[sq.QuestionType]):
  q_rng, audio_rng, trace_rng = _streams(split, seed, index)
  qtype = _pick_type(q_rng, types)
  draft = qtype.sample(q_rng, opts)
  _, derived = qtype.derive(draft.spec, draft.events)
  if derived != draft.answer:
    raise RuntimeError(f"synthetic: question type {qtype.name!r} drew answer {draft.answer!r} but its events "
                       f"give {derived!r} (split={split}, seed={seed}, index={index}); events={draft.events}")
  choices = [draft.choices[i] for i in q_rng.permutation(len(draft.choices))]
  used = int(q_rng.integers(len(draft.templates)))
  return qtype, draft, choices, used, audio_rng, trace_rng


def make_item(split: str, seed: int, index: int, opts: SynthOptions,
              types: list[sq.QuestionType] | None = None) -> dict:
  """Item `index` of (split, seed): the same dict whenever and wherever it is built."""
  types = types or selected_types(opts)
  qtype, draft, choices, used, audio_rng, trace_rng = _draft(split, seed, index, opts, types)
  corruption = _corruption(trace_rng, opts)
  trace, trace_answer = st.make_trace(qtype, draft, choices, corruption, trace_rng, opts)
  snr_db = _snr(audio_rng, opts)
  audio = synth_audio.render(draft.events, opts.clip_seconds, audio_rng, snr_db) if opts.with_audio else None
  return dict(
      id=f"synth-{split}-{seed}-{index:06d}", audio=audio, question=draft.templates[used], choices=choices,
      answer=draft.answer, task=qtype.task, category=qtype.category, sub_category=qtype.sub_category,
      difficulty=draft.difficulty, events=draft.events, trace=trace, corruption=corruption,
      rewordings=_rewordings(draft.templates, used), question_type=qtype.name, trace_answer=trace_answer,
      snr_db=snr_db)


def generate(split: str, num_examples: int, seed: int = 0, **options) -> Iterator[dict]:
  """Yields items 0 .. num_examples - 1 of (split, seed). Options: see `SynthOptions`."""
  _check_split(split)
  opts = make_options(**options)
  types = selected_types(opts)
  for index in range(num_examples):
    yield make_item(split, seed, index, opts, types)


def corpus(split: str = "train", num_examples: int = 2000, seed: int = 0, **options) -> Iterator[str]:
  """Every text of the items, without synthesising audio: for training a tokenizer.

  Per item: the question, its rewordings, the options, the clean trace and one trace of each
  corruption (so the corpus covers the whole trace vocabulary whatever the options' rates).
  """
  _check_split(split)
  opts = dataclasses.replace(make_options(**options), with_audio=False)
  types = selected_types(opts)
  for index in range(num_examples):
    qtype, draft, choices, used, _, trace_rng = _draft(split, seed, index, opts, types)
    yield draft.templates[used]
    yield from _rewordings(draft.templates, used)
    yield from choices
    for corruption in CORRUPTIONS:
      yield st.make_trace(qtype, draft, choices, corruption, trace_rng, opts)[0]
