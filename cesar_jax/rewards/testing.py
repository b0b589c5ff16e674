"""Procedural multiple-choice examples and completions, for reward tests and benchmarks.

Questions and reasoning sentences in the style of MMAU (sound, music, speech); completions of
several kinds, good and bad, so that every branch of the rewards is exercised:

  good       <think>reasoning</think><answer>correct option</answer>
  letter     ... <answer>(B)</answer> / <answer>B. option</answer>
  wrong      well formed, another option
  truncated  the think part never closes (generation hit the length limit)
  no_think   <answer>...</answer> only
  malformed  stray text, repeated / nested / misordered tags, an unclosed answer
"""

from __future__ import annotations

import string
from typing import Any, Iterator

import numpy as np

from cesar_jax import tokenizers as tok_lib

QUESTIONS = (
    ("Which instrument is playing the main melody?",
     ("piano", "violin", "acoustic guitar", "flute", "trumpet", "cello")),
    ("How many beeps can be heard in the clip?", ("1", "2", "3", "4", "5")),
    ("What emotion does the speaker express?", ("happy", "sad", "angry", "neutral", "fearful")),
    ("Is the tempo of the music fast or slow?", ("fast", "slow", "moderate")),
    ("Which sound is heard first?", ("a dog barking", "a car horn", "rain falling",
                                     "a door closing", "birds chirping")),
    ("What is the key of the song?", ("C major", "A minor", "G major", "E minor")),
    ("Based on the given audio, identify the source of the speaking voice.",
     ("Man", "Woman", "Child", "Robot")),
    ("What genre best describes this music?", ("jazz", "rock", "classical", "hip hop",
                                               "electronic")),
    ("Does the pitch of the tone rise or fall?", ("rises", "falls", "stays the same")),
    ("Which acoustic environment was this recorded in?",
     ("a large hall with reverberation", "a small room", "outdoors", "a car interior")),
)

SENTENCES = (
    "First, I hear a loud beep at {f} Hz between {t0} s and {t1} s.",
    "Then the tempo is {bpm} BPM, so the rhythm is fast.",
    "The second tone is higher than the first tone.",
    "Compared to the piano, the timbre is brighter and the amplitude is larger.",
    "Let me listen again.",
    "Because the pitch rises, the melody sounds happy.",
    "Option {letter} is unlikely since there is no speech.",
    "If the frequency rises then it's a chirp.",
    "The speaker's prosody and intonation suggest {option}.",
    "Based on the chord progression, the key is probably {option}.",
    "There are {n} beeps in total.",
    "Finally, the evidence indicates {option}.",
    "Hmm, the spectrum shows strong harmonics around {f}Hz.",
    "The café's naïve résumé — über 日本語 🎵 ok.",
    "I think the answer is {option}.",
    "Noise: 3.5dB; SNR=12; x2 speed; abc123def.",
)


def example(rng: np.random.Generator, index: int = 0) -> dict[str, Any]:
  q, options = QUESTIONS[int(rng.integers(len(QUESTIONS)))]
  n = int(rng.integers(2, min(len(options), 5) + 1))
  choices = [str(c) for c in rng.choice(options, size=n, replace=False)]
  return {"id": f"ex{index}", "question": q, "choices": choices,
          "answer": choices[int(rng.integers(n))]}


def sentence(rng: np.random.Generator, ex: dict[str, Any]) -> str:
  s = SENTENCES[int(rng.integers(len(SENTENCES)))]
  i = int(rng.integers(len(ex["choices"])))
  return s.format(f=int(rng.integers(50, 8000)), t0=round(float(rng.random()), 1),
                  t1=round(1 + float(rng.random()), 1), bpm=int(rng.integers(40, 200)),
                  letter=string.ascii_uppercase[i], option=ex["choices"][i],
                  n=int(rng.integers(1, 9)))


def think(rng: np.random.Generator, ex: dict[str, Any], num_sentences: int) -> str:
  return " ".join(sentence(rng, ex) for _ in range(num_sentences))


def answer_text(rng: np.random.Generator, ex: dict[str, Any], correct: bool = True) -> str:
  i = ex["choices"].index(ex["answer"])
  if not correct:
    i = (i + 1 + int(rng.integers(len(ex["choices"]) - 1))) % len(ex["choices"])
  letter, text = string.ascii_uppercase[i], ex["choices"][i]
  return [text, f"({letter})", f"{letter}. {text}", f"({letter}) {text}", letter,
          text.upper()][int(rng.integers(6))]


KINDS = ("good", "wrong", "truncated", "no_think", "malformed")


def completion(rng: np.random.Generator, ex: dict[str, Any], kind: str = "good",
               num_sentences: int | None = None) -> str:
  n = int(rng.integers(0, 8)) if num_sentences is None else num_sentences
  t = think(rng, ex, n)
  if kind in ("good", "wrong"):
    ws = ["", " ", "\n", "\n\n"]
    pick = lambda: ws[int(rng.integers(len(ws)))]
    return (f"{pick()}<think>{pick()}{t}{pick()}</think>{pick()}<answer>"
            f"{answer_text(rng, ex, kind == 'good')}</answer>{pick()}")
  if kind == "truncated":
    return f"<think>{t}"
  if kind == "no_think":
    return f"<answer>{answer_text(rng, ex)}</answer>"
  if kind == "malformed":
    a = answer_text(rng, ex)
    forms = [f"Sure! <think>{t}</think><answer>{a}</answer>",
             f"<think>{t}</think><answer>{a}</answer> extra",
             f"<think>{t}<think></think></think><answer>{a}</answer>",
             f"<think>{t}</think><answer>{a}</answer><answer>{a}</answer>",
             f"<answer>{a}</answer><think>{t}</think>",
             f"<think>{t}</think><answer>{a} <think>x</think></answer>",
             f"<think>{t}</think>done<answer>{a}</answer>",
             f"<think>{t}</think><answer>{a}",
             f"<think>{t}<|im_end|></think><answer>{a}</answer>",
             f"{t}</think><answer>{a}</answer>"]
    return forms[int(rng.integers(len(forms)))]
  raise ValueError(f"unknown completion kind {kind!r}; known: {KINDS}")


def corpus(num: int = 300, seed: int = 0) -> Iterator[str]:
  """Texts to train a small test tokenizer on."""
  rng = np.random.default_rng(seed)
  for i in range(num):
    ex = example(rng, i)
    yield ex["question"] + " " + " ".join(ex["choices"])
    yield completion(rng, ex, KINDS[i % len(KINDS)])


def fixed_length_completion(rng: np.random.Generator, ex: dict[str, Any],
                            tokenizer: tok_lib.Tokenizer, length: int,
                            kind: str = "good") -> list[int] | None:
  """Token ids of exactly `length` tokens that round-trip through decode/encode, or None.

  "good"/"wrong": a well-formed completion whose think part is cut to fit; "truncated": the
  first `length` tokens of a long think part (never closed).
  """
  t_ids = tokenizer.encode(think(rng, ex, 40))
  if kind == "truncated":
    ids = [tokenizer.think_open_id] + t_ids
  else:
    tail = ([tokenizer.think_close_id, tokenizer.answer_open_id]
            + tokenizer.encode(answer_text(rng, ex, kind == "good")) + [tokenizer.answer_close_id])
    keep = length - 1 - len(tail)
    if keep < 0:
      return None
    ids = [tokenizer.think_open_id] + t_ids[:keep] + tail
  ids = ids[:length]
  if len(ids) != length or tokenizer.encode(tokenizer.decode(ids)) != ids:
    return None
  return ids
