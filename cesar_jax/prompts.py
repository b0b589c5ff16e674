"""The user text of a multiple-choice audio question, and the reasoning instruction.

The wording follows R1-AQA and Ke-Omni-R (shared/REFERENCES.md): the question, the options,
then the output instruction. Options are lettered so an answer may name the letter, the text,
or both; the reward and the benchmark scorer accept all three. In "prompted" budget mode the
think budget is only stated here ("less than N words", as Ke-Omni-R); budget 0 asks for the
answer directly.
"""

from __future__ import annotations

import string
from typing import Sequence

OPTION_LETTERS = string.ascii_uppercase


def format_options(choices: Sequence[str]) -> str:
  """`(A) first (B) second ...`."""
  if not choices:
    raise ValueError("a multiple-choice question needs at least one option")
  if len(choices) > len(OPTION_LETTERS):
    raise ValueError(f"at most {len(OPTION_LETTERS)} options, got {len(choices)}")
  return " ".join(f"({OPTION_LETTERS[i]}) {c}" for i, c in enumerate(choices))


def instruction(think_budget: int | None = None) -> str:
  """The output-format instruction; `think_budget` in words for prompted budgets, 0 = no think."""
  if think_budget is None:
    return ("Output the thinking process in <think> </think> and final answer in "
            "<answer> </answer>.")
  if think_budget < 0:
    raise ValueError(f"think_budget must be >= 0, got {think_budget}")
  if think_budget == 0:
    return "Output the final answer in <answer> </answer>."
  return (f"Output the thinking process (less than {think_budget} words) in <think> </think> "
          "and final answer in <answer> </answer>.")


def format_question(question: str, choices: Sequence[str], *,
                    think_budget: int | None = None) -> str:
  """The user turn: question, lettered options, and the output instruction."""
  question = question.strip()
  return (f"{question} Please choose the answer from the following options: "
          f"{format_options(choices)}. {instruction(think_budget)}")
