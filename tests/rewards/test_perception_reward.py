"""The judge-free perception reward and the conclusion-answer consistency reward (host side)."""

import json
import math

import numpy as np
import pytest

from cesar_jax import rewards
from cesar_jax.data import synth_audio
from cesar_jax.data import synthetic
from cesar_jax.eval import perception as checker
from cesar_jax.rewards import perception

TASKS = None if synth_audio.espeak_available() else ("sound", "music")


def _event(kind, onset, offset, freq=0.0, freq_end=0.0, timbre="", db=-20.0, text=""):
  return dict(kind=kind, onset_s=onset, offset_s=offset, freq_hz=freq, freq_end_hz=freq_end,
              timbre=timbre, loudness_db=db, text=text)


EVENTS = [
    _event("beep", 0.50, 0.62, 1000, timbre="sine"),
    _event("chirp", 1.00, 1.60, 500, 1000, "sine"),
    _event("beep", 2.00, 2.12, 1000, timbre="sine"),
    _event("tone", 2.50, 3.00, 440, timbre="square", db=-12.0),
]
EX = {"id": "clip7", "question": "How many beeps?", "choices": ["1", "2", "3"], "answer": "2",
      "events": EVENTS}
# tests/eval/test_perception.py's chain: 4 of 6 claims correct, 3 of 4 events described.
CHAIN = ("<think>First, I hear a beep between 0.5 s and 0.6 s. Then I hear a falling chirp between "
         "1.0 s and 1.6 s. Then I hear a beep between 2.0 s and 2.1 s. Finally, I hear a loud "
         "square tone at 440 Hz. There are 2 beeps in total. 2 beeps come after the chirp. "
         "Therefore, the answer is 2.</think><answer>2</answer>")


def _values(name, completions, examples, **section):
  config = rewards.default_config("mpar2")
  config.perception.update(section)
  names, values = rewards.host_values(config, completions, examples)
  return values[:, names.index(name)]


def test_hand_values():
  texts = [CHAIN, "<think>I am not sure.</think><answer>2</answer>", "",
           "<think>First, I hear a beep. Then I hear a beep. Then I hear a beep.</think>"]
  got = _values("perception", texts, [EX] * 4)
  # 4/6 + 0.5 * 3/4; no claims: 0; garbage: 0; three beep claims of which two align with the two
  # beeps (in order; the third cannot), recall 2/4: 2/3 + 0.5 * 2/4.
  np.testing.assert_allclose(got, [4 / 6 + 0.375, 0, 0, 2 / 3 + 0.25], rtol=1e-6)
  np.testing.assert_allclose(_values("perception", texts[:1], [EX], recall_weight=0.0),
                             [4 / 6], rtol=1e-6)
  # Events given as the JSON string a tfds record holds.
  np.testing.assert_allclose(
      _values("perception", texts[:1], [dict(EX, events=json.dumps(EVENTS))]), got[:1])


def test_equals_the_eval_checker_on_the_same_chains():
  items = list(synthetic.generate("test", 120, seed=3, tasks=TASKS, with_audio=False,
                                  hallucination_rate=0.3, inconsistent_rate=0.2,
                                  rambling_rate=0.2))
  rng = np.random.default_rng(0)
  texts = []
  for item in items:  # The trace, or a cut / shuffled version of it (model-like mistakes).
    t = item["trace"]
    cut = int(rng.integers(len(t) + 1))
    texts.append([t, t[:cut], " ".join(rng.permutation(t.split(". ")))][int(rng.integers(3))])
  got = _values("perception", texts, items, recall_weight=0.25)
  want = []
  for text, item in zip(texts, items):
    r = checker.score(text, item["events"])
    want.append(0.0 if r.num_claims == 0 else
                r.precision + 0.25 * (0.0 if math.isnan(r.recall) else r.recall))
  np.testing.assert_allclose(got, np.float32(want), rtol=1e-6)
  assert len(np.unique(got)) > 5  # A varied set: clean, hallucinated, cut, no claims.


def test_records_without_events_need_a_judge():
  no_truth = {"id": "mmau-42", "question": "q?", "choices": ["a", "b"], "answer": "a"}
  with pytest.raises(rewards.RewardError,
                     match=r"'perception': record 'mmau-42' \(row 1\) has no ground-truth "
                           r"'events' and no judge is configured"):
    _values("perception", [CHAIN, CHAIN], [EX, no_truth])
  with pytest.raises(rewards.RewardError, match="unknown judge 'nope'"):
    _values("perception", [CHAIN], [no_truth], judge="nope")

  seen = []

  @perception.register_judge("test_judge")
  def _judge(completions, examples, *, config):
    seen.append([ex["id"] for ex in examples])
    assert config.perception.judge == "test_judge"
    return [0.25] * len(completions)

  got = _values("perception", [CHAIN, CHAIN, "x"], [no_truth, EX, dict(no_truth, id="b")],
                judge="test_judge")
  np.testing.assert_allclose(got, [0.25, 4 / 6 + 0.375, 0.25], rtol=1e-6)
  assert seen == [["mmau-42", "b"]]  # Only the rows without ground truth.


@pytest.mark.parametrize("text, value", [
    ("<think>Therefore, the answer is 2.</think><answer>2</answer>", 1),
    ("<think>Therefore the answer is (B) 2.</think><answer>2</answer>", 1),  # Same option.
    ("<think>Therefore, the answer is B.</think><answer>(B) 2</answer>", 1),
    ("<think>Therefore, the answer is 3.</think><answer>2</answer>", 0),
    ("<think>Therefore, the answer is 2. Therefore, the answer is 3.</think><answer>2</answer>", 0),
    ("<think>Therefore, the answer is two beeps.</think><answer>two beeps</answer>", 1),
    ("<think>I hear two beeps.</think><answer>2</answer>", 0),  # No conclusion.
    ("<think>Therefore, the answer is 2.</think>", 0),  # No answer.
])
def test_answer_consistency(text, value):
  assert _values("answer_consistency", [text], [EX])[0] == value
