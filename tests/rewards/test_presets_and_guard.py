"""The audio_thinker and mpar2 presets, think_accuracy, and the guard: hand values, both paths."""

import numpy as np
import pytest

from cesar_jax import rewards
from cesar_jax.rewards import testing

Q = {"id": "q1", "question": "Which instrument is playing the melody?",
     "choices": ["piano", "violin", "flute"], "answer": "violin"}


def _score(tok, scorer, same, texts, examples, config):
  ours, ref = scorer.texts(tok, texts, examples, config)
  same(ours, ref, texts)
  return ref


def test_preset_weights():
  assert dict(rewards.default_config("audio_thinker").weights) == {
      "think_accuracy": 1.0, "format": 1.0, "answer_consistency": 1.0}
  assert dict(rewards.default_config("mpar2").weights) == {
      "accuracy": 1.0, "format": 1.0, "perception": 1.0, "answer_consistency": 1.0}
  c = rewards.default_config("mpar2")
  assert c.perception.recall_weight == 0.5 and c.perception.judge == ""
  assert rewards.default_config().guard.min_think_tokens == 0  # Off: the paper's formula.


@pytest.mark.parametrize("text, thinks, acc", [
    ("<think>x</think><answer>violin</answer>", 1, 1),  # +1
    ("<think>x</think><answer>piano</answer>", 1, 0),  # 0
    ("<answer>violin</answer>", 0, 1),  # +2
    ("<think></think><answer>piano</answer>", 0, 0),  # -1: an empty think part is no think.
    ("Sure! <think>x</think><answer>violin</answer>", 1, 1),  # Format not required.
    ("</think><think>x<answer>violin</answer>", 0, 1),  # </think> before <think>: no think.
    ("<think>x y z", 0, 0),  # Truncated: never closed.
])
def test_think_accuracy_and_audio_thinker(builtin_tok, scorer, same, text, thinks, acc):
  out = _score(builtin_tok, scorer, same, [text], [Q], rewards.default_config("audio_thinker"))
  value = {(1, 1): 1, (1, 0): 0, (0, 1): 2, (0, 0): -1}[thinks, acc]
  assert out["think_accuracy"][0] == value
  assert out["answer_consistency"][0] == 0  # No "Therefore, the answer is ..." conclusion.
  assert out["total"][0] == value + out["format"][0]


def test_audio_thinker_totals(builtin_tok, scorer, same):
  texts = ["<think>The bowing is clear. Therefore, the answer is violin.</think>"
           "<answer>(B) violin</answer>",
           "<think>Therefore, the answer is piano.</think><answer>violin</answer>",
           "<think></think><answer>B</answer>"]
  out = _score(builtin_tok, scorer, same, texts, [Q] * 3, rewards.default_config("audio_thinker"))
  # think & correct 1 + format 1 + consistent 1; think & correct 1 + 1 + 0; no think & correct
  # 2 + format 1 + no conclusion 0.
  np.testing.assert_array_equal(out["total"], [3, 2, 3])


def test_think_accuracy_parity_on_generated_completions(builtin_tok, scorer, same):
  rng = np.random.default_rng(11)
  examples = [testing.example(rng, i) for i in range(128)]
  texts = [testing.completion(rng, ex, testing.KINDS[i % len(testing.KINDS)])
           for i, ex in enumerate(examples)]
  texts += ["<answer>" + ex["answer"] + "</answer>" for ex in examples[:32]]
  out = _score(builtin_tok, scorer, same, texts, examples + examples[:32],
               rewards.default_config("audio_thinker"))
  assert set(np.unique(out["think_accuracy"])) == {-1, 0, 1, 2}


def test_mpar2_totals(builtin_tok, scorer, same):
  ev = dict(kind="beep", onset_s=0.5, offset_s=0.62, freq_hz=1000.0, freq_end_hz=0.0,
            timbre="sine", loudness_db=-20.0, text="")
  ex = {"id": "c1", "question": "How many beeps?", "choices": ["1", "2"], "answer": "1",
        "events": [ev]}
  texts = ["<think>First, I hear a beep. There are 1 beeps in total. Therefore, the answer is 1."
           "</think><answer>1</answer>",
           "<think>First, I hear a beep. Then I hear a beep. There are 2 beeps in total. "
           "Therefore, the answer is 2.</think><answer>2</answer>",
           "<answer>1</answer>"]
  out = _score(builtin_tok, scorer, same, texts, [ex] * 3, rewards.default_config("mpar2"))
  # Perception: 2/2 claims + 0.5 * 1/1; 1 of 3 claims (one beep aligns) + 0.5; no claims 0.
  np.testing.assert_allclose(out["perception"], [1.5, 1 / 3 + 0.5, 0], rtol=1e-6)
  np.testing.assert_array_equal(out["answer_consistency"], [1, 1, 0])
  np.testing.assert_allclose(out["total"], [1 + 1 + 1.5 + 1, 0 + 1 + 1 / 3 + 0.5 + 1, 1 + 0],
                             rtol=1e-6)


def test_guard_hand_values(builtin_tok, scorer, same):
  """No process reward under min_think_tokens (traced: one compile for all minimums)."""
  think = "First, the melody is bright. Therefore violin."
  n = len(builtin_tok.encode(think))
  texts = [f"<think>{think}</think><answer>(B) violin</answer>", "<answer>violin</answer>"]
  examples = [Q, dict(Q, think_budget=0)]  # The second expects the answer-only form.
  base = _score(builtin_tok, scorer, same, texts, examples, rewards.default_config("cesar"))
  assert base["keywords"][0] == 3 and base["overthinking"][1] == 1
  for minimum, earns in ((n, True), (n + 1, False)):
    config = rewards.default_config("cesar")
    config.guard.min_think_tokens = minimum
    before = rewards.apply._cache_size()
    out = _score(builtin_tok, scorer, same, texts, examples, config)
    assert rewards.apply._cache_size() == before
    for k in ("consistency", "keywords", "overthinking"):
      assert out[k][0] == (base[k][0] if earns else 0), (minimum, k)
      assert out[k][1] == base[k][1], (minimum, k)  # Answer-only form: exempt.
    assert out["accuracy"][0] == out["format"][0] == 1
    want = base["total"][0] if earns else np.float32(6)
    assert out["total"][0] == want


def test_optimum_diagnostics(builtin_tok, scorer, same):
  """think_concepts and keyword_density (weight 0: logged, not rewarded), hand values."""
  config = rewards.default_config("cesar")
  config.weights.think_concepts = 0.0
  config.weights.keyword_density = 0.0
  think = "First, the melody is bright. Therefore violin."
  texts = [f"<think>{think}</think><answer>violin</answer>",
           "<think>first therefore melody instrument playing main violin</think>"
           "<answer>violin</answer>", "<think>melody</think>", "<think></think><answer>B</answer>"]
  out = _score(builtin_tok, scorer, same, texts, [Q] * 4, config)
  f = np.float32
  n = [len(builtin_tok.encode(t)) for t in (think, texts[1][7:texts[1].index("</think>")])]
  # C(t) = {first, melody, bright, therefore, violin}; the bag: 7 concepts. Phrases present:
  # first, therefore, melody (1 each family); the bag also has "instrument".
  np.testing.assert_array_equal(out["think_concepts"], [5, 7, 0, 0])
  np.testing.assert_array_equal(out["keyword_density"], [f(3) / f(n[0]), f(4) / f(n[1]), 0, 0])
  base = _score(builtin_tok, scorer, same, texts, [Q] * 4, rewards.default_config("cesar"))
  np.testing.assert_array_equal(out["total"], base["total"])  # Weight 0: the total is unchanged.
  # Both implementations on generated completions (the same config: no new compile).
  rng = np.random.default_rng(12)
  examples = [testing.example(rng, i) for i in range(128)]
  texts = [testing.completion(rng, ex, testing.KINDS[i % len(testing.KINDS)],
                              num_sentences=int(rng.integers(0, 10)))
           for i, ex in enumerate(examples)]
  out = _score(builtin_tok, scorer, same, texts, examples, config)
  assert len(np.unique(out["think_concepts"])) > 5 and len(np.unique(out["keyword_density"])) > 5
