"""The user text of a multiple-choice audio question, the reasoning instruction, and the chat
templates that wrap it around the audio (one per model architecture).

The wording follows R1-AQA and Ke-Omni-R (shared/REFERENCES.md): the question, the options,
then the output instruction. Options are lettered so an answer may name the letter, the text,
or both; the reward and the benchmark scorer accept all three. In "prompted" budget mode the
think budget is only stated here ("less than N words", as Ke-Omni-R); budget 0 asks for the
answer directly.

Chat templates (generation prompt on, one clip, one user turn; `chat_around_audio` gives the
text before and after the `<|AUDIO|>` placeholders):

  qwen2_audio   `<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nAudio 1:
                <|audio_bos|>{audio}<|audio_eos|>\n{user}<|im_end|>\n<|im_start|>assistant\n`
                (Qwen2AudioProcessor's template).
  qwen2_5_omni  `<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n<|audio_bos|>
                {audio}<|audio_eos|>{user}<|im_end|>\n<|im_start|>assistant\n`: the
                Qwen2.5-Omni processor's template for a user turn of [audio, text] parts
                (parts joined with nothing between them, no "Audio 1:" as `add_audio_id` is off).

Default system prompts: Qwen2-Audio's "You are a helpful assistant."; Qwen2.5-Omni's release
template's "You are Qwen, a virtual human developed by the Qwen Team, ...", the prompt the
model was trained with (its model card asks for it). Either can be replaced.
"""

from __future__ import annotations

import string
from typing import Sequence

OPTION_LETTERS = string.ascii_uppercase

CHAT_FORMATS = ("qwen2_audio", "qwen2_5_omni")
DEFAULT_SYSTEM_PROMPTS = {
    "qwen2_audio": "You are a helpful assistant.",
    "qwen2_5_omni": ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, "
                     "capable of perceiving auditory and visual inputs, as well as generating "
                     "text and speech."),
}


def chat_around_audio(user_text: str, chat_format: str = "qwen2_audio",
                      system_prompt: str | None = None) -> tuple[str, str]:
  """(text before the audio placeholders, text after them) of one chat prompt.

  The head ends with `<|audio_bos|>`, the tail starts with `<|audio_eos|>`; system_prompt None
  is the format's default (`DEFAULT_SYSTEM_PROMPTS`).
  """
  if chat_format not in CHAT_FORMATS:
    raise ValueError(f"chat_format={chat_format!r} is not one of {CHAT_FORMATS}")
  system = DEFAULT_SYSTEM_PROMPTS[chat_format] if system_prompt is None else system_prompt
  start = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"
  end = f"{user_text}<|im_end|>\n<|im_start|>assistant\n"
  if chat_format == "qwen2_5_omni":
    return start + "<|audio_bos|>", "<|audio_eos|>" + end
  return start + "Audio 1: <|audio_bos|>", "<|audio_eos|>\n" + end


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
