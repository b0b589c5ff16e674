"""MPAR^2's perception reward without a judge, and the conclusion-answer consistency reward.

Both are host-side Python components (`registry.register_python`), on decoded completions:

* `perception`: the judge-free checker of the evaluation (`cesar_jax.eval.perception.score`:
  the chain's audio claims, read with the synthetic trace grammar, checked against the record's
  ground-truth `events`) turned into a reward:

      perception = precision + recall_weight * recall     (0 for a chain that claims nothing)

  precision = correct claims / claims, recall = true events the best pass describes / true
  events (0 for a clip without events). MPAR^2 (arXiv 2603.02266) rewards perception through
  a Gemini judge (its CAFE checks extracted claims against the audio); here the ground truth is
  exact. Precision alone pays for one safe claim and silence; the recall term (config
  `perception.recall_weight`, 0.5 by default: our choice) pays for describing the clip.
  Like the evaluation, the checker reads the think part (or the text before `<answer>`) whether
  or not the format is valid: the format reward judges the form.

  A record without ground truth (no `events` field, or None) is an error naming the component
  and the record, unless a judge is configured: `perception.judge` names a function registered
  with `register_judge`, called on those rows only. None ships with the project; a judge for
  real data (an LLM reading the chain and the clip's caption, an audio-captioning model) has
  the signature

      judge(completions: list[str], examples: list[dict], *, config) -> list[float]

  and returns values on the same scale (precision + recall_weight * recall, 0 without claims).

* `answer_consistency`: 1 when the think part's conclusion ("Therefore, the answer is X.", the
  trace grammar's) and the answer tag say the same: equal words, or both name the same option
  of the record (letter, text, or both, as the accuracy reward reads an answer); 0 otherwise,
  and 0 when either is missing. Audio-Thinker's and MPAR^2's consistency rewards (think
  conclusion matches the answer) without their judge.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np

from cesar_jax.eval import perception as checker
from cesar_jax.rewards import examples as ex_lib
from cesar_jax.rewards import host as host_lib
from cesar_jax.rewards import registry
from cesar_jax.rewards import text

RECALL_WEIGHT = 0.5  # Our choice (see the module docstring).

Judge = Callable[..., Sequence[float]]
_JUDGES: dict[str, Judge] = {}


def register_judge(name: str, fn: Judge | None = None):
  """Registers a perception judge for records without ground-truth events (decorator too)."""
  def add(f: Judge) -> Judge:
    _JUDGES[name] = f
    return f
  return add(fn) if fn is not None else add


def default_section() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"recall_weight": RECALL_WEIGHT, "judge": ""})


def _section(config: ml_collections.ConfigDict | None) -> Mapping[str, Any]:
  section = (config.get("perception", None) if config is not None else None) or {}
  return {"recall_weight": float(section.get("recall_weight", RECALL_WEIGHT)),
          "judge": str(section.get("judge", "") or "")}


def events_of(example: Mapping[str, Any]) -> list[dict] | None:
  """The record's ground-truth events (a list, or its JSON string), None when it has none."""
  events = example.get("events")
  if isinstance(events, (str, bytes)):
    events = json.loads(events)
  return None if events is None else list(events)


def value(result: checker.PerceptionResult, recall_weight: float) -> float:
  """The reward of one checked chain: precision + recall_weight * recall, 0 without claims."""
  if result.num_claims == 0:
    return 0.0
  recall = 0.0 if math.isnan(result.recall) else result.recall
  return float(result.precision) + recall_weight * recall


@registry.register_python("perception")
def perception_reward(completions: Sequence[str], examples: Sequence[Mapping[str, Any]], *,
                      config: ml_collections.ConfigDict | None = None, **kw) -> list[float]:
  del kw
  opts = _section(config)
  out = np.zeros([len(completions)], np.float64)
  unjudged = []
  for i, (completion, ex) in enumerate(zip(completions, examples)):
    events = events_of(ex)
    if events is None:
      unjudged.append(i)
      continue
    out[i] = value(checker.score(completion, events), opts["recall_weight"])
  if unjudged:
    if not opts["judge"]:
      i = unjudged[0]
      raise host_lib.RewardError(
          f"reward component 'perception': record {ex_lib.example_id(examples[i], i)!r} (row "
          f"{i}) has no ground-truth 'events' and no judge is configured (config "
          "reward.perception.judge, see cesar_jax.rewards.perception.register_judge)")
    if opts["judge"] not in _JUDGES:
      raise host_lib.RewardError(
          f"reward component 'perception': unknown judge {opts['judge']!r} (config "
          f"reward.perception.judge); registered: {', '.join(sorted(_JUDGES)) or 'none'}")
    judged = _JUDGES[opts["judge"]]([completions[i] for i in unjudged],
                                    [examples[i] for i in unjudged], config=config)
    judged = list(judged)
    if len(judged) != len(unjudged):
      raise host_lib.RewardError(
          f"reward component 'perception': judge {opts['judge']!r} returned {len(judged)} "
          f"values for {len(unjudged)} records")
    out[unjudged] = judged
  return out.tolist()


def _names(words_text: str, choices: Sequence[str], strip: bool) -> tuple[int | None, tuple]:
  """(the option a text names, if exactly one, else None; its normalised words)."""
  words = tuple(text.normalize(w, strip) for w in text.words(words_text))
  named = [i for i, pats in enumerate(ex_lib.option_patterns(choices, strip)) if words in pats]
  return (named[0] if len(named) == 1 else None), words


@registry.register_python("answer_consistency")
def answer_consistency_reward(completions: Sequence[str],
                              examples: Sequence[Mapping[str, Any]], *,
                              config: ml_collections.ConfigDict | None = None,
                              **kw) -> list[float]:
  del kw
  strip = bool(config.concepts.strip_plural_s) if config is not None else True
  out = []
  for completion, ex in zip(completions, examples):
    conclusion, answer = checker.conclusion_and_answer(completion)
    if conclusion is None or answer is None:
      out.append(0.0)
      continue
    choices = [str(c) for c in ex.get("choices", ())]
    c_option, c_words = _names(conclusion, choices, strip)
    a_option, a_words = _names(answer, choices, strip)
    same = (c_words == a_words and bool(c_words)) or (c_option is not None and
                                                      c_option == a_option)
    out.append(float(same))
  return out
