"""Hand-computed values of every reward component (both implementations must give them)."""

import numpy as np
import pytest

from cesar_jax import rewards

Q = {"id": "q1", "question": "Which instrument is playing the melody?",
     "choices": ["piano", "violin", "flute"], "answer": "violin"}
# C(Q): which, is, the are stopwords -> {instrument, playing, melody, piano, violin, flute}.


def _score(tok, scorer, same, texts, examples, config=None):
  config = config or rewards.default_config("cesar")
  ours, ref = scorer.texts(tok, texts, examples, config)
  same(ours, ref, texts)
  return ref


def test_good_completion_every_component(builtin_tok, scorer, same):
  think = "First, the melody is bright. Therefore violin."
  text = f"<think>{think}</think><answer>(B) violin</answer>"
  out = _score(builtin_tok, scorer, same, [text], [Q])
  n_think = len(builtin_tok.encode(think))
  assert out["format"][0] == 1
  assert out["accuracy"][0] == 1
  # C(t) = {first, melody, bright, therefore, violin}; C(y_hat) = {violin}:
  # Sim(t, y) = 1 / 5, Sim(t, Q) = |{melody, violin}| / max(5, 6) = 1 / 3.
  assert out["consistency"][0] == np.float32(np.float32(1) / np.float32(5)) + np.float32(
      np.float32(2) / np.float32(6))
  # pattern "first", logic "therefore", domain "melody": each family saturated (cap 1).
  assert out["keywords"][0] == 3
  assert out["overthinking"][0] == np.float32(1) - np.float32(n_think) / np.float32(256)
  expected = (np.float32(5) + np.float32(1) + out["consistency"][0] + np.float32(3)
              + out["overthinking"][0])
  assert out["total"][0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("text, fmt, acc", [
    ("<think>x</think><answer>violin</answer>", 1, 1),
    ("\n <think></think>\n\n<answer>violin</answer> \n", 1, 1),  # Empty think, whitespace.
    ("Sure! <think>x</think><answer>violin</answer>", 0, 1),  # Stray text before.
    ("<think>x</think>so<answer>violin</answer>", 0, 1),  # Stray text between.
    ("<think>x</think><answer>violin</answer>.", 0, 1),  # Stray text after.
    ("<think>x</think><answer>violin", 0, 0),  # Unclosed answer (truncated).
    ("<think>x", 0, 0),  # Truncated in the think part.
    ("<think><think>x</think></think><answer>violin</answer>", 0, 1),  # Nested.
    ("<think>x</think><answer>violin</answer><answer>piano</answer>", 0, 1),  # Repeated.
    ("<answer>violin</answer><think>x</think>", 0, 1),  # Misordered.
    ("<think>x</think><answer>violin <think>y</think></answer>", 0, 0),  # Tag inside: "violin y".
    ("<answer>violin</answer>", 0, 1),  # No think part (think form expected).
    ("<think>x<|im_end|></think><answer>violin</answer>", 1, 1),  # Special inside: allowed.
    ("<|endoftext|><think>x</think><answer>violin</answer>", 0, 1),  # Special outside.
])
def test_format_and_accuracy(builtin_tok, scorer, same, text, fmt, acc):
  out = _score(builtin_tok, scorer, same, [text], [Q])
  assert (out["format"][0], out["accuracy"][0]) == (fmt, acc)
  if not fmt:  # Process rewards are gated on the format.
    assert out["consistency"][0] == out["keywords"][0] == out["overthinking"][0] == 0


def test_answer_only_form(builtin_tok, scorer, same):
  q0 = dict(Q, think_budget=0)
  texts = ["<answer>B</answer>", " <answer>violin</answer>\n", "<think></think><answer>B</answer>"]
  out = _score(builtin_tok, scorer, same, texts, [q0] * 3)
  np.testing.assert_array_equal(out["format"], [1, 1, 0])
  np.testing.assert_array_equal(out["accuracy"], [1, 1, 1])
  np.testing.assert_array_equal(out["overthinking"], [1, 1, 0])  # |t| = 0.
  np.testing.assert_array_equal(out["consistency"], [0, 0, 0])  # No think part.
  config = rewards.default_config("cesar")
  config.format.answer_only = True  # For examples without think_budget.
  out = _score(builtin_tok, scorer, same, texts[:1], [Q], config)
  assert out["format"][0] == 1


@pytest.mark.parametrize("answer, acc", [
    ("B", 1), ("(b)", 1), ("b.", 1), ("B) violin", 1), ("(B) Violin", 1), ("VIOLIN", 1),
    ("violins", 1),  # Normalised: plural "s" stripped.
    (" violin ", 1), ("A", 0), ("(A) piano", 0), ("(A) violin", 0), ("D", 0), ("", 0),
    ("The answer is violin", 0), ("violin piano", 0), ("option B", 0), ("B violin piano", 0),
])
def test_accuracy_forms(builtin_tok, scorer, same, answer, acc):
  out = _score(builtin_tok, scorer, same, [f"<think>x</think><answer>{answer}</answer>"], [Q])
  assert out["accuracy"][0] == acc


def test_accuracy_ambiguous_options(builtin_tok, scorer, same):
  # Option A's text is "b": the answer "b" names option A (text) and option B (letter).
  ex = {"question": "Which letter?", "choices": ["b", "c"], "answer": "b"}
  texts = ["<think>x</think><answer>b</answer>", "<think>x</think><answer>(A) b</answer>",
           "<think>x</think><answer>c</answer>"]
  out = _score(builtin_tok, scorer, same, texts, [ex] * 3)
  np.testing.assert_array_equal(out["accuracy"], [0, 1, 0])


def test_answer_given_as_index(builtin_tok, scorer, same):
  ex = dict(Q, answer=1)
  out = _score(builtin_tok, scorer, same, ["<think>x</think><answer>violin</answer>"], [ex])
  assert out["accuracy"][0] == 1


def test_consistency(builtin_tok, scorer, same):
  texts = [
      # C(t) = {piano, violin, flute, instrument} ; y = {violin}: 1/4 + 4/6.
      "<think>piano violin flute instrument</think><answer>violin</answer>",
      # Repeats and stopwords change nothing: C(t) = {violin}: 1/1 + 1/6.
      "<think>the violin, the violin and THE VIOLINS</think><answer>B</answer>",
      # No option chosen: y = the answer's concepts {violin, sound}; C(t) = {violin}: 1/2 + 1/6.
      "<think>violin</think><answer>it is a violin sound</answer>",
      # Empty think: 0.
      "<think></think><answer>violin</answer>",
      # Nothing in common: C(t) = {drum}: 0 + 0.
      "<think>drum</think><answer>violin</answer>",
      # Single-letter words are not concepts: C(t) = {}.
      "<think>a b c d</think><answer>violin</answer>",
  ]
  out = _score(builtin_tok, scorer, same, texts, [Q] * len(texts))
  f = np.float32
  expected = [f(1) / f(4) + f(4) / f(6), f(1) + f(1) / f(6), f(1) / f(2) + f(1) / f(6), 0, 0, 0]
  np.testing.assert_array_equal(out["consistency"], np.array(expected, np.float32))


def test_keywords(builtin_tok, scorer, same):
  texts = [
      "<think>first then finally</think><answer>B</answer>",  # pattern 3 -> capped 1.
      "<think>first first first</think><answer>B</answer>",  # once: 1/2.
      "<think>if it rises then it is a chirp</think><answer>B</answer>",  # if...then, then.
      "<think>then it rises if so</think><answer>B</answer>",  # then; no if...then.
      "<think>compared to the chord progression</think><answer>B</answer>",
      "<think>Therefore, because of the pitch and the tempo</think><answer>B</answer>",
      "<think>compared without chords</think><answer>B</answer>",  # "chords" -> chord.
  ]
  # Phrases present: [pattern, logic, domain].
  expected = [[3, 0, 0], [1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 0, 2], [0, 2, 2], [0, 0, 1]]
  out = _score(builtin_tok, scorer, same, texts, [Q] * len(texts))  # Caps of 1 (default).
  np.testing.assert_array_equal(out["keywords"], [sum(min(1, n) for n in row) for row in expected])
  config = rewards.default_config("cesar")
  for family in ("pattern", "logic", "domain"):
    config.keywords[family].cap = 2.0  # Traced: no recompile.
  out = _score(builtin_tok, scorer, same, texts, [Q] * len(texts), config)
  np.testing.assert_array_equal(
      out["keywords"], [sum(min(2, n) / 2 for n in row) for row in expected])


def test_overthinking(builtin_tok, scorer, same):
  config = rewards.default_config("cesar")
  config.overthinking.max_think_tokens = 8  # Traced: no recompile.
  think = "one two three four"
  n = len(builtin_tok.encode(think))
  texts = [f"<think>{think}</think><answer>B</answer>",
           f"<think>{think * 5}</think><answer>B</answer>",
           "<think></think><answer>B</answer>"]
  out = _score(builtin_tok, scorer, same, texts, [Q] * 3, config)
  f = np.float32
  np.testing.assert_array_equal(out["overthinking"], [f(1) - f(n) / f(8), 0, 1])


def test_presets(builtin_tok, scorer, same):
  text = "<think>First, the melody. Therefore violin.</think><answer>violin</answer>"
  for preset, weights in (("outcome", (1, 1)), ("ke_omni_r", (2, 1))):
    out = _score(builtin_tok, scorer, same, [text], [Q], rewards.default_config(preset))
    assert set(out) == {"accuracy", "format", "total"}
    assert out["total"][0] == sum(weights)
  out = _score(builtin_tok, scorer, same, [text], [Q], rewards.default_config("cesar"))
  assert set(out) == {"accuracy", "format", "consistency", "keywords", "overthinking", "total"}
  with pytest.raises(KeyError, match="nope"):
    rewards.default_config("nope")
