"""Reward-gaming probes of CESAR's reward against a concise, well-structured, correct completion.

"Well-structured" in CESAR's sense: a sequencing or comparison marker, a logical connective, an
acoustic term, and reasoning grounded in the question (it mentions the question's concepts).
Each probe is applied to that completion, or replaces its think part; all are scored by both
implementations (held equal).

What they show (issue 15 item 5). Keyword stuffing, repeating the question, padding and tags
inside the answer all score strictly less. But the formula has an optimum that is not
reasoning: a short bag of the question's concepts plus one keyword per family (e.g. think =
"first therefore melody instrument playing main violin": 10.67 against 10.10 for case 0's good
completion) beats every good completion here, because Sim divides by the larger concept set
(a bag made of Q's concepts is all overlap) and the overthinking term pays for brevity. These
are findings, asserted as such. The guard `guard.min_think_tokens` (off by default, the
paper's formula) pays no process reward to a think part under that many tokens: it removes the
short bags, leaves the good completions' totals unchanged, and is itself defeated by padding
the bag with stopwords (not concepts) up to the minimum, asserted too.
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
def test_these_tricks_do_not_beat_a_good_completion(builtin_tok, scorer, same, case):
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


ISSUE_BAG = "first therefore melody instrument playing main violin"  # issue 15's probe


def _bags(ex):
  """Bag-of-concepts probes: (name, think part)."""
  q = ex["question"] + " " + " ".join(ex["choices"])
  bag_q = f"first therefore melody {q}"  # one keyword per family + Q's words (its concepts)
  return {"bag of Q": bag_q, "bag of Q padded with stopwords": bag_q + " the" * 30}


def _totals(tok, scorer, same, ex, thinks, answer, min_think_tokens=0):
  config = rewards.default_config("cesar")
  config.guard.min_think_tokens = min_think_tokens  # Traced: no recompile.
  texts = [f"<think>{t}</think><answer>{answer}</answer>" for t in thinks]
  ours, ref = scorer.texts(tok, texts, [ex] * len(texts), config)
  same(ours, ref, texts)
  return ref


def test_finding_the_issue_bag_beats_the_good_completion(builtin_tok, scorer, same):
  ex, think, answer = CASES[0]
  ref = _totals(builtin_tok, scorer, same, ex, [think, ISSUE_BAG], answer)
  np.testing.assert_allclose(ref["total"], [10.0987, 10.6741], atol=1e-4)
  # Both answer correctly with every keyword family; the bag's Sim and brevity win.
  assert ref["keywords"][1] == 3 and ref["consistency"][1] > ref["consistency"][0]
  assert ref["overthinking"][1] > ref["overthinking"][0]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_finding_a_bag_of_question_concepts_beats_every_good_completion(builtin_tok, scorer,
                                                                        same, case):
  ex, think, answer = CASES[case]
  ref = _totals(builtin_tok, scorer, same, ex, [think, _bags(ex)["bag of Q"]], answer)
  assert ref["total"][1] > ref["total"][0], ref["total"]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_guard_removes_short_bags_and_keeps_good_completions(builtin_tok, scorer, same, case):
  ex, think, answer = CASES[case]
  thinks = [think, ISSUE_BAG, _bags(ex)["bag of Q"]]
  lengths = [len(builtin_tok.encode(t)) for t in thinks]
  minimum = 64
  assert lengths[0] >= minimum > max(lengths[1:]), lengths
  off = _totals(builtin_tok, scorer, same, ex, thinks, answer)
  on = _totals(builtin_tok, scorer, same, ex, thinks, answer, min_think_tokens=minimum)
  assert on["total"][0] == off["total"][0]  # The good completion keeps its reward.
  np.testing.assert_array_equal(on["total"][1:], [6, 6])  # accuracy 5 + format 1, no process.
  for k in ("consistency", "keywords", "overthinking"):
    np.testing.assert_array_equal(on[k][1:], [0, 0])
  assert on["total"][0] > on["total"][1:].max()


def test_finding_the_guard_is_defeated_by_stopword_padding(builtin_tok, scorer, same):
  """Stopwords are not concepts: padding a bag up to the minimum keeps its Sim."""
  ex, think, answer = CASES[0]
  padded = _bags(ex)["bag of Q padded with stopwords"]
  assert len(builtin_tok.encode(padded)) >= 64
  on = _totals(builtin_tok, scorer, same, ex, [think, padded], answer, min_think_tokens=64)
  assert on["total"][1] > on["total"][0], on["total"]
