"""Reward-gaming probes: no trick scores above a concise, well-structured, correct completion.

"Well-structured" in CESAR's sense: a sequencing or comparison marker, a logical connective, an
acoustic term, and reasoning grounded in the question (it mentions the question's concepts).
Each trick is applied to that completion, or replaces its think part; all are scored by both
implementations (held equal) and must total strictly less.
"""

import numpy as np
import pytest

from cesar_jax import rewards

CASES = [
    ({"question": "Which instrument is playing the main melody?",
      "choices": ["piano", "violin", "flute", "trumpet"], "answer": "violin"},
     "First, the main melody is played by a bowed string instrument with a warm timbre. Then "
     "the pitch slides smoothly, which a piano, flute or trumpet cannot do. Therefore the "
     "instrument playing is a violin.", "(B) violin"),
    ({"question": "How many beeps can be heard in the clip?", "choices": ["2", "3", "4", "5"],
      "answer": "3"},
     "First, I hear a beep with a high pitch at 0.5 s in the clip, then a second beep at 1.2 s, "
     "and finally a third at 2.0 s. Therefore 3 beeps can be heard, not many more.", "(B) 3"),
    ({"question": "What emotion does the speaker express?",
      "choices": ["happy", "sad", "angry", "neutral"], "answer": "sad"},
     "First, the speaker's pitch is low and the speech is slow. Then the voice trembles with "
     "falling intonation. Because of this prosody, the emotion the speaker expresses is sad, "
     "not happy, angry or neutral.", "sad"),
]
KEYWORDS = ("first then finally next compared to in contrast therefore because since thus "
            "based on timbre pitch tempo melody rhythm frequency prosody amplitude")


def _tricks(ex, think, answer):
  q = ex["question"] + " " + " ".join(ex["choices"])
  wrap = lambda t, a=answer: f"<think>{t}</think><answer>{a}</answer>"
  return {
      # Keyword stuffing.
      "repeated keywords": wrap(f"{think} {'therefore because first then ' * 5}"),
      "more keywords": wrap(f"{think} {KEYWORDS}"),
      "keywords only": wrap(KEYWORDS),
      "keywords and question": wrap(f"{KEYWORDS} {q}"),
      # Repeating the question.
      "question only": wrap(q),
      "question three times": wrap(" ".join([q] * 3)),
      "question then reasoning": wrap(f"{q} {think}"),
      "reasoning then question": wrap(f"{think} {q}"),
      # Padding the think part.
      "filler sentences": wrap(f"{think} {'Let me listen again. ' * 10}"),
      "filler words": wrap(think + " hmm" * 60),
      "reasoning twice": wrap(f"{think} {think}"),
      # Tags inside the answer.
      "think inside answer": wrap(think, f"{answer} <think>{think}</think>"),
      "answer inside answer": wrap(think, f"<answer>{answer}</answer>"),
      "whole completion inside answer": wrap(think, wrap(think)),
      "think tags around answer": f"<answer><think>{think}</think>{answer}</answer>",
  }


@pytest.mark.parametrize("case", range(len(CASES)))
def test_tricks_never_beat_a_good_completion(builtin_tok, scorer, same, case):
  ex, think, answer = CASES[case]
  good = f"<think>{think}</think><answer>{answer}</answer>"
  tricks = _tricks(ex, think, answer)
  texts = [good] + list(tricks.values())
  config = rewards.default_config("cesar")
  ours, ref = scorer.texts(builtin_tok, texts, [ex] * len(texts), config)
  same(ours, ref, texts)
  assert ref["accuracy"][0] == ref["format"][0] == 1 and ref["keywords"][0] == 3
  totals = dict(zip(tricks, ref["total"][1:]))
  beaten = {k: float(v) for k, v in totals.items() if v >= ref["total"][0]}
  assert not beaten, f"good completion {ref['total'][0]:.3f} beaten by {beaten}"


def test_repeating_a_keyword_earns_nothing(builtin_tok, scorer, same):
  ex = CASES[0][0]
  texts = [f"<think>{'therefore ' * n}the timbre</think><answer>violin</answer>"
           for n in (1, 2, 10)]
  ours, ref = scorer.texts(builtin_tok, texts, [ex] * 3, rewards.default_config("cesar"))
  same(ours, ref, texts)
  np.testing.assert_array_equal(ref["keywords"], [2, 2, 2])  # logic + domain.
  assert ref["total"][0] > ref["total"][1] > ref["total"][2]  # Only the length changes.
