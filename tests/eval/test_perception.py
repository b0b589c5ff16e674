"""Judge-free perception accuracy: claims of a chain checked against ground-truth events."""

import math

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from cesar_jax.data import synth_audio
from cesar_jax.data import synthetic
from cesar_jax.eval import perception

TASKS = None if synth_audio.espeak_available() else ("sound", "music")


def _event(kind, onset, offset, freq=0.0, freq_end=0.0, timbre="", db=-20.0, text=""):
  return dict(kind=kind, onset_s=onset, offset_s=offset, freq_hz=freq, freq_end_hz=freq_end, timbre=timbre,
              loudness_db=db, text=text)


EVENTS = [
    _event("beep", 0.50, 0.62, 1000, timbre="sine"),
    _event("chirp", 1.00, 1.60, 500, 1000, "sine"),
    _event("beep", 2.00, 2.12, 1000, timbre="sine"),
    _event("tone", 2.50, 3.00, 440, timbre="square", db=-12.0),
]


def test_hand_written_chain():
  chain = ("<think>First, I hear a beep between 0.5 s and 0.6 s. Then I hear a falling chirp between 1.0 s and 1.6 s. "
           "Then I hear a beep between 2.0 s and 2.1 s. Finally, I hear a loud square tone at 440 Hz. "
           "There are 2 beeps in total. 2 beeps come after the chirp. Therefore, the answer is 2.</think>"
           "<answer>1</answer>")
  r = perception.score(chain, EVENTS)
  verdicts = [ok for _, ok in r.checks]
  # Wrong: the chirp rises (not falling), and only one beep follows it.
  assert verdicts == [True, False, True, True, True, False]
  assert r.precision == pytest.approx(4 / 6) and r.recall == pytest.approx(3 / 4)
  assert r.passes == 1 and r.answer_consistent is False and r.num_claims == 6 and r.num_correct == 4


def test_tolerances_and_derived_claims():
  ok = perception.score("I hear a sine tone at 452 Hz. The melody rises.", [_event("tone", 1, 2, 440, timbre="sine")])
  assert [v for _, v in ok.checks] == [True, False]  # 2.7 % off is within 3 %; one tone has no contour
  off = perception.score("I hear a sine tone at 466 Hz.", [_event("tone", 1, 2, 440, timbre="sine")])
  assert off.precision == 0.0 and off.recall == 0.0  # a semitone off
  late = perception.score("I hear a beep between 0.7 s and 0.8 s.", [_event("beep", 0.5, 0.6, 1000, timbre="sine")])
  assert late.precision == 0.0
  tones = [_event("tone", t, t + 0.3, f, timbre="sine") for t, f in ((0.2, 300), (0.8, 500), (1.4, 400))]
  chain = ("The second tone is higher than the first tone. The last tone is lower than the first tone. "
           "The melody rises then falls. The order is tone, then tone, then tone.")
  assert [v for _, v in perception.score(chain, tones).checks] == [True, False, True, True]
  beeps = [_event("beep", 0.2 + 0.5 * k, 0.3 + 0.5 * k, 1000, timbre="sine") for k in range(4)]
  assert perception.score("The beeps are 0.5 s apart, so the tempo is 120 BPM.", beeps).precision == 1.0
  assert perception.score("The beeps are 0.5 s apart, so the tempo is 90 BPM.", beeps).precision == 0.0


def test_without_times_claims_align_in_order():
  events = [_event("beep", 0.5, 0.6), _event("noise", 1.0, 1.3), _event("beep", 2.0, 2.1)]
  r = perception.score("First, I hear a beep. Then I hear a beep. Then I hear a noise burst. Finally, I hear a beep.",
                       events)
  assert r.num_correct == 3 and r.num_claims == 4 and r.recall == 1.0  # one extra beep cannot align


@pytest.fixture(scope="module")
def items():
  opts = dict(tasks=TASKS, with_audio=False, hallucination_rate=0.25, inconsistent_rate=0.25, rambling_rate=0.25)
  return list(synthetic.generate("test", 300, seed=9, **opts))


def test_correct_traces_score_perfect_perception(items):
  clean = [i for i in items if i["corruption"] == "none"]
  untimed = list(synthetic.generate("test", 100, seed=9, tasks=TASKS, with_audio=False, trace_times=False))
  assert len(clean) > 50
  for item in clean + untimed:
    r = perception.score(item["trace"], item["events"])
    assert (r.precision, r.recall, r.passes, r.answer_consistent) == (1.0, 1.0, 1, True), item["trace"]
    assert r.num_claims >= len(item["events"])


def test_each_corruption_is_detected(items):
  seen = set()
  for item in items:
    r = perception.score(item["trace"], item["events"])
    kind = item["corruption"]
    seen.add(kind)
    if kind == "hallucination":
      assert r.precision < 1.0, item["trace"]
    elif kind == "inconsistent":
      assert r.precision == 1.0 and r.answer_consistent is False
    elif kind == "rambling":
      assert r.precision == 1.0 and r.recall == 1.0 and r.passes >= 2 and r.answer_consistent
  assert seen == {"none", "hallucination", "inconsistent", "rambling"}
  untimed = synthetic.generate("test", 60, seed=9, tasks=TASKS, with_audio=False, trace_times=False,
                               hallucination_rate=1.0)
  assert all(perception.score(i["trace"], i["events"]).precision < 1.0 for i in untimed)


@pytest.mark.parametrize("text", ["", "asdf", "<think></think>", "<think>I hear a</think><answer>", "...", None,
                                  "I hear a beep between x s and y s.", "beep beep beep. 3 beeps",
                                  "\x00\ufffd<answer><answer></think>Therefore, the answer is"])
def test_garbage_gives_no_claims_and_never_raises(text):
  r = perception.score(text, EVENTS)
  assert r.num_claims == 0 and math.isnan(r.precision) and r.recall == 0.0 and r.passes == 0
  assert r.answer_consistent is None


_WORDS = ["I hear a", "beep", "sine tone at", "rising chirp from", "noise burst", "voice saying", "between", "0.5",
          "99", "s and", "Hz", "to", "There are", "no", "beeps", "in total", "come after the", "chirp", "The",
          "first", "last", "tone", "is higher than the", "melody rises then", "falls", "First,", "Then", ".", ". ",
          "<think>", "</think>", "<answer>", "</answer>", "Therefore, the answer is", "The order is", ", then"]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=40))
def test_scoring_random_grammar_soup_never_raises(words):
  r = perception.score(" ".join(words), EVENTS)
  assert r.num_correct <= r.num_claims and (r.num_claims == 0) == math.isnan(r.precision)
  assert 0.0 <= r.recall <= 1.0


def test_absurd_numbers_are_false_claims():
  r = perception.score("There are 99999999999999999999 beeps in total. The beeps are 0 s apart, so the tempo is 0 BPM.",
                       EVENTS)
  assert r.num_claims == 2 and r.precision == 0.0


def test_think_length():
  trace = "<think>First, I hear a beep. Therefore, the answer is 1.</think><answer>1</answer>"
  assert perception.think_length(trace) == 10

  class Chars:
    def encode(self, s):
      return list(s)

  assert perception.think_length(trace, Chars()) == len("First, I hear a beep. Therefore, the answer is 1.")


def test_accuracy_by_length_hand_values():
  lengths = [5, 15, 12, 30, 38, 40, 7]
  acc = [1.0, 0.5, 0.0, 0.25, 0.75, 0.5, math.nan]
  out = perception.accuracy_by_length(lengths, acc, bin_edges=[0, 10, 20, 30, 40])
  np.testing.assert_array_equal(out["count"], [1, 2, 0, 3])
  np.testing.assert_allclose(out["mean"][[0, 1, 3]], [1.0, 0.25, 0.5])
  assert math.isnan(out["mean"][2]) and math.isnan(out["sem"][0])
  np.testing.assert_allclose(out["sem"][1], np.std([0.5, 0.0], ddof=1) / np.sqrt(2))
  np.testing.assert_allclose(out["bin_centers"], [5, 15, 25, 35])
  default = perception.accuracy_by_length([0, 10, 20], [1.0, 0.0, 1.0], num_bins=2)
  np.testing.assert_allclose(default["bin_edges"], [0, 10, 20])
  np.testing.assert_array_equal(default["count"], [1, 2])
  with pytest.raises(ValueError, match="differ"):
    perception.accuracy_by_length([1, 2], [1.0])
