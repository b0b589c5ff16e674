"""The synthetic benchmark: determinism, answers derivable from events, audio faithful to events."""

import collections
import re

import numpy as np
import pytest

from cesar_jax.data import synth_audio
from cesar_jax.data import synthetic

SR = 16_000
SPEECH = synth_audio.espeak_available()
TASKS = None if SPEECH else ("sound", "music")  # without espeak-ng, the speech types are left out
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NOUN_KIND = {"beep": "beep", "tone": "tone", "chirp": "chirp", "noise burst": "noise", "voice": "speech"}
KIND_NOUN = {v: k for k, v in NOUN_KIND.items()}


@pytest.fixture(scope="module")
def text_items():
  return list(synthetic.generate("train", 900, seed=11, with_audio=False, tasks=TASKS))


def _nouns_in(question: str) -> list[str]:
  """Kinds named in a question, in order of appearance."""
  found = re.finditer(r"noise burst|beep|tone|chirp|voice", question)
  return [NOUN_KIND[m.group(0)] for m in found]


def solve(item: dict) -> str:
  """The answer recomputed from the events alone (independent of the generator's code)."""
  events, q, qt = item["events"], item["question"], item["question_type"]
  of = lambda kind: [e for e in events if e["kind"] == kind]  # noqa: E731
  if qt in ("count_beeps", "count"):
    return str(len(of(_nouns_in(q)[0])))
  if qt == "presence":
    return "yes" if of(_nouns_in(q)[0]) else "no"
  if qt == "order":
    return ", then ".join(KIND_NOUN[e["kind"]] for e in events)
  if qt == "loudness":
    a, b = of(_nouns_in(q)[0])
    return "louder" if b["loudness_db"] > a["loudness_db"] else "softer"
  if qt == "count_after":
    anchor = of(_nouns_in(q)[1])[0]
    return str(sum(e["onset_s"] > anchor["offset_s"] for e in of("beep")))
  if qt == "pitch_compare":
    a, b = of("tone")
    return "higher" if b["freq_hz"] > a["freq_hz"] else "lower"
  if qt == "contour":
    f = [e["freq_hz"] for e in of("tone")]
    signs = "".join("u" if y > x else "d" for x, y in zip(f, f[1:]))
    shape = re.sub(r"(.)\1+", r"\1", signs)
    return {"u": "rising", "d": "falling", "ud": "rising then falling", "du": "falling then rising"}[shape]
  if qt == "timbre":
    return of("tone")[0]["timbre"] + " wave"
  if qt == "tempo":
    onsets = [e["onset_s"] for e in of("beep")]
    return f"{round(60 / np.mean(np.diff(onsets)))} BPM"
  if qt == "last_vs_first":
    t = of("tone")
    return "yes" if t[-1]["freq_hz"] > t[0]["freq_hz"] else "no"
  if qt in ("spoken_number", "spoken_word"):
    return of("speech")[0]["text"]
  if qt == "number_after_beep":
    beep = of("beep")[0]
    return [e["text"] for e in of("speech") if e["onset_s"] > beep["offset_s"]][0]
  if qt == "spoken_sum":
    return str(sum(NUMBERS.index(e["text"]) for e in of("speech")))
  raise AssertionError(f"unknown question type {qt}")


def test_every_answer_follows_from_the_events(text_items):
  assert {i["question_type"] for i in text_items} == {
      n for n, q in synthetic.QUESTION_TYPES.items() if TASKS is None or q.task in TASKS}
  for item in text_items:
    assert solve(item) == item["answer"], item


def test_items_are_well_formed(text_items):
  for item in text_items:
    choices = item["choices"]
    assert 2 <= len(choices) <= 5 and len(set(choices)) == len(choices), item["id"]
    assert choices.count(item["answer"]) == 1, item["id"]
    assert item["task"] in ("sound", "music", "speech")
    assert item["category"] in ("Information Extraction", "Reasoning")
    assert item["difficulty"] in ("easy", "medium", "hard") and item["sub_category"]
    assert item["corruption"] == "none" and item["trace_answer"] == item["answer"]
    assert item["trace"].startswith("<think>") and item["trace"].endswith(f"</think><answer>{item['answer']}</answer>")
    assert len(item["rewordings"]) >= 3 and item["question"] not in item["rewordings"]
    events = item["events"]
    for e in events:
      assert set(e) == {"kind", "onset_s", "offset_s", "freq_hz", "freq_end_hz", "timbre", "loudness_db", "text"}
      assert 0.0 < e["onset_s"] < e["offset_s"] < 4.0
      assert e["onset_s"] * SR == pytest.approx(round(e["onset_s"] * SR), abs=1e-6)  # whole samples
    for a, b in zip(events, events[1:]):
      assert b["onset_s"] >= a["offset_s"] + 0.1, item["id"]  # in order, never overlapping


def test_answer_positions_and_labels_are_balanced(text_items):
  positions = collections.defaultdict(collections.Counter)
  for item in text_items:
    positions[len(item["choices"])][item["choices"].index(item["answer"])] += 1
  for n, counts in positions.items():  # uniform within 4 standard deviations
    total = sum(counts.values())
    assert set(counts) == set(range(n)), (n, counts)
    for p in range(n):
      assert abs(counts[p] / total - 1 / n) < 4 * np.sqrt((1 / n) * (1 - 1 / n) / total), (n, counts)
  # The CPU-demo subset: balanced labels and positions.
  demo = list(synthetic.generate("train", 400, seed=5, with_audio=False,
                                 question_types=synthetic.DEMO_QUESTION_TYPES, min_semitones=5))
  pitch = collections.Counter(i["answer"] for i in demo if i["question_type"] == "pitch_compare")
  assert abs(pitch["higher"] / sum(pitch.values()) - 0.5) < 4 * np.sqrt(0.25 / sum(pitch.values())), pitch
  counts = collections.Counter(i["answer"] for i in demo if i["question_type"] == "count_beeps")
  assert set(counts) == {"1", "2", "3", "4", "5"} and max(counts.values()) / sum(counts.values()) < 0.35, counts
  first = collections.Counter(i["choices"][0] == i["answer"] for i in demo if len(i["choices"]) == 2)
  assert abs(first[True] / sum(first.values()) - 0.5) < 4 * np.sqrt(0.25 / sum(first.values()))


def test_deterministic_by_seed_and_item_alone():
  opts = dict(tasks=TASKS, hallucination_rate=0.3, rambling_rate=0.3)
  a = list(synthetic.generate("validation", 6, seed=3, **opts))
  b = list(synthetic.generate("validation", 6, seed=3, **opts))
  text = list(synthetic.generate("validation", 6, seed=3, with_audio=False, **opts))
  alone = synthetic.make_item("validation", 3, 5, synthetic.make_options(**opts))
  for x, y, t in zip(a, b, text):
    np.testing.assert_array_equal(x["audio"], y["audio"])
    assert {k: v for k, v in x.items() if k != "audio"} == {k: v for k, v in y.items() if k != "audio"}
    assert t["audio"] is None and {k: v for k, v in t.items() if k != "audio"} == {
        k: v for k, v in x.items() if k != "audio"}
  np.testing.assert_array_equal(alone["audio"], a[5]["audio"])
  assert alone["trace"] == a[5]["trace"] and alone["id"] == "synth-validation-3-000005"
  other = [synthetic.make_item(s, 3, 0, synthetic.make_options(**opts))["events"] for s in ("train", "test")]
  assert a[0]["events"] != other[0] and other[0] != other[1]


def _db(x: np.ndarray) -> float:
  return 20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _dominant_hz(x: np.ndarray) -> float:
  spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=4 * SR))
  return float(np.argmax(spectrum) * SR / (4 * SR))


def test_audio_agrees_with_events():
  items = list(synthetic.generate("test", 30, seed=2, tasks=TASKS, snr_db=20.0))
  assert {i["question_type"] for i in items} >= {"tempo", "order", "contour", "count"}
  for item in items:
    audio, events = item["audio"], item["events"]
    assert audio.dtype == np.float32 and audio.shape == (4 * SR,) and np.abs(audio).max() <= 1.0
    floor_db = min(e["loudness_db"] for e in events) - 20.0
    outside = np.ones(audio.shape, bool)
    for e in events:
      lo, hi = round(e["onset_s"] * SR), round(e["offset_s"] * SR)
      outside[max(lo - 80, 0):hi + 80] = False
      window = audio[lo:hi]
      assert _db(window) == pytest.approx(e["loudness_db"], abs=0.3), (item["id"], e)
      if e["kind"] in ("beep", "tone"):
        assert _dominant_hz(window) == pytest.approx(e["freq_hz"], rel=0.02), (item["id"], e)
      if e["kind"] == "chirp":
        third = len(window) // 3
        start, end = _dominant_hz(window[:third]), _dominant_hz(window[-third:])
        assert (end > start) == (e["freq_end_hz"] > e["freq_hz"]), (item["id"], e)
        assert min(e["freq_hz"], e["freq_end_hz"]) * 0.9 < min(start, end)
        assert max(start, end) < max(e["freq_hz"], e["freq_end_hz"]) * 1.1
    assert _db(audio[outside]) == pytest.approx(floor_db, abs=0.5), item["id"]


def test_clean_clip_is_silent_between_events():
  item = next(synthetic.generate("train", 1, seed=0, question_types=("count_beeps",), snr_db=None))
  audio, events = item["audio"], item["events"]
  assert len(events) == int(item["answer"])
  first = round(events[0]["onset_s"] * SR)
  assert not audio[:first].any() and audio[first:first + 80].any()


@pytest.mark.skipif(not SPEECH, reason="needs espeak-ng (apt-get install -y espeak-ng)")
def test_speech_events_hold_the_voice():
  item = next(synthetic.generate("train", 1, seed=0, question_types=("spoken_number",), snr_db=None))
  speech = [e for e in item["events"] if e["kind"] == "speech"][0]
  voice = synth_audio.speech_wave(speech["text"])
  lo = round(speech["onset_s"] * SR)
  window = item["audio"][lo:lo + len(voice)]
  assert round(speech["offset_s"] * SR) - lo == len(voice)
  assert np.corrcoef(window, voice)[0, 1] > 0.999  # the very voice, only rescaled
  assert synth_audio.speech_wave("seven").shape != synth_audio.speech_wave("three").shape


def test_options_and_errors_are_named():
  with pytest.raises(TypeError, match="unknown option.*'clip_len'"):
    next(synthetic.generate("train", 1, clip_len=3))
  with pytest.raises(ValueError, match="unknown question type.*'counting'"):
    next(synthetic.generate("train", 1, question_types=("counting",)))
  with pytest.raises(ValueError, match="unknown split 'dev'"):
    next(synthetic.generate("dev", 1))
  with pytest.raises(ValueError, match="corruption rates"):
    synthetic.make_options(hallucination_rate=0.7, rambling_rate=0.5)
  with pytest.raises(ValueError, match="do not fit in a 1.5 s clip"):
    list(synthetic.generate("train", 20, question_types=("contour",), clip_seconds=1.5, with_audio=False))
  short = next(synthetic.generate("train", 1, question_types="count_beeps", clip_seconds=2.0, max_count=3))
  assert short["audio"].shape == (2 * SR,) and short["answer"] in ("1", "2", "3")


def test_corpus_covers_questions_options_and_traces():
  texts = list(synthetic.corpus("train", 40, seed=0, tasks=TASKS))
  items = list(synthetic.generate("train", 40, seed=0, with_audio=False, tasks=TASKS))
  assert all(isinstance(t, str) and t for t in texts)
  joined = set(texts)
  for item in items:
    assert item["question"] in joined and item["trace"] in joined and set(item["choices"]) <= joined
  assert any("listen again" in t or "check that again" in t or "once more" in t for t in texts)
