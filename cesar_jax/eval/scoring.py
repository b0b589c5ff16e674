"""Benchmark scoring: the official MMAU / MMAR `string_match`, option letters, breakdowns.

`string_match` reproduces, rule for rule, the function of the official evaluation scripts
(MMAU: github.com/Sakshi113/MMAU `evaluation.py`; MMAR: github.com/ddlBoJack/MMAR
`code/evaluation.py`; both hold the same function). Its known quirk is kept on purpose: an
option whose word set equals the answer's (e.g. "Guitar, Piano" vs "Piano, Guitar") is not
treated as a wrong option, so predicting it scores as correct. Numbers we report must be
comparable with published ones, so we do not fix it.

The predictions file written here is what those scripts read: the benchmark's items, each
with the prediction added under `model_prediction` (MMAU) or `answer_prediction` (MMAR).
"""

from __future__ import annotations

import collections
import json
import os
import re
from typing import Any, Iterable, Mapping, Sequence

from cesar_jax.data import records

_WORD = re.compile(r"\b\w+\b")

# Key the official scripts read the prediction from.
PREDICTION_KEYS = {"mmau": "model_prediction", "mmar": "answer_prediction"}
# Breakdowns the official scripts print (MMAU: task, difficulty, sub-category; MMAR: modality,
# category, sub-category); we add MMAU's category (its 13 list-valued ones count in each).
BREAKDOWN_KEYS = {
    "mmau": ("task", "category", "sub-category", "difficulty"),
    "mmar": ("modality", "category", "sub-category"),
}

# "B", "(B)", "B.", "B)", "(B).", "Option B", "option (b):", "Answer: B". A bare letter must be
# upper-case: a lone "a" is more likely the article than option A.
_LETTER = re.compile(
    r"^\s*(?:(?:the\s+)?(?:answer|option|choice)\s*(?:is)?\s*[:\-]?\s*)?"
    r"(?:\((?P<paren>[A-Za-z])\)|(?P<bare>[A-Za-z]))\s*[.:)]?\s*$",
    re.IGNORECASE,
)
_PREFIXED = re.compile(r"^\s*(?:the\s+)?(?:answer|option|choice)", re.IGNORECASE)


def _tokens(text: str) -> set[str]:
  """Set of lower-cased word tokens, as the official `tokenize`."""
  return set(_WORD.findall(text.lower()))


def string_match(prediction: str, answer: str, choices: Sequence[str]) -> bool:
  """The official MMAU / MMAR rule.

  Correct iff every word of the answer is in the prediction and the prediction has no word
  of a wrong option that is not also a word of the answer. Options whose word set equals the
  answer's are not wrong options. An empty (word-less) prediction is wrong.
  Note the argument order differs from the official `string_match(answer, prediction, choices)`.
  """
  prediction_tokens = _tokens(prediction)
  if not prediction_tokens:
    return False
  answer_tokens = _tokens(answer)
  incorrect_tokens: set[str] = set()
  for choice in choices:
    choice_tokens = _tokens(choice)
    if choice_tokens != answer_tokens:
      incorrect_tokens |= choice_tokens - answer_tokens
  return answer_tokens <= prediction_tokens and prediction_tokens.isdisjoint(incorrect_tokens)


def parse_option_letter(prediction: str, num_choices: int) -> int | None:
  """Index of the option a letter-only prediction names ("B", "(b)", "B.", "Option B"), else None.

  Letters beyond the number of choices give None (the text is then scored as it is).
  """
  match = _LETTER.match(prediction)
  if match is None:
    return None
  if match.group("bare") is not None:
    letter = match.group("bare")
    if not letter.isupper() and not _PREFIXED.match(prediction):
      return None
  else:
    letter = match.group("paren")
  index = ord(letter.upper()) - ord("A")
  return index if index < num_choices else None


def resolve_option_letter(prediction: str, choices: Sequence[str]) -> str:
  """The option text when `prediction` is only an option letter, else `prediction` unchanged.

  A prediction whose words are an option's words is that option's text, not a letter: with
  chord options ["G", "A#", "D", "E"] (MMAU has such items), "D" means the chord D.
  """
  index = parse_option_letter(prediction, len(choices))
  if index is None:
    return prediction
  words = _tokens(prediction)
  if any(words == _tokens(choice) for choice in choices):
    return prediction
  return choices[index]


def score(prediction: str, answer: str, choices: Sequence[str]) -> bool:
  """Official `string_match` after resolving a letter-only prediction to its option text."""
  return string_match(resolve_option_letter(prediction, choices), answer, choices)


_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract_answer(completion: str) -> str:
  """Text inside the last `<answer>...</answer>` of a completion, stripped; "" when absent."""
  found = _ANSWER_TAG.findall(completion)
  return found[-1].strip() if found else ""


def _item_id(item: Mapping[str, Any], index: int) -> str:
  return f"item {index} (id {item.get('id', '?')!r})"


def _values(item: Mapping[str, Any], key: str, index: int) -> list[str]:
  """The item's value(s) under `key`; list values count in each of their (distinct) entries."""
  if key not in item:
    raise KeyError(f"{_item_id(item, index)} has no key {key!r} needed for the breakdown")
  value = item[key]
  if isinstance(value, (list, tuple)):
    return list(dict.fromkeys(str(v) for v in value))
  return [str(value)]


def _cell(correct: int, total: int) -> dict[str, float | int]:
  return {"correct": correct, "total": total, "accuracy": 100.0 * correct / total if total else 0.0}


def accuracy_breakdown(
    items: Sequence[Mapping[str, Any]],
    correct: Sequence[bool],
    keys: Sequence[str] | None = None,
) -> dict[str, Any]:
  """Accuracy (percent) overall and per value of each key.

  Args:
    items: benchmark items (dicts as in the metadata files).
    correct: bool per item.
    keys: item keys to break down by; default: those of the MMAU or MMAR set (whichever has
      its first key in `items[0]`). A list value (13 MMAU categories) counts in each entry.

  Returns:
    {"overall": {"correct", "total", "accuracy"}, key: {value: {"correct", "total",
    "accuracy"}}, ...}, values sorted by name.
  """
  if len(items) != len(correct):
    raise ValueError(f"{len(items)} items but {len(correct)} correctness flags")
  if keys is None:
    keys = BREAKDOWN_KEYS["mmar"] if items and "modality" in items[0] else BREAKDOWN_KEYS["mmau"]
  counts = {key: collections.defaultdict(lambda: [0, 0]) for key in keys}
  for index, (item, ok) in enumerate(zip(items, correct)):
    for key in keys:
      for value in _values(item, key, index):
        counts[key][value][0] += bool(ok)
        counts[key][value][1] += 1
  result: dict[str, Any] = {"overall": _cell(sum(bool(c) for c in correct), len(items))}
  for key in keys:
    result[key] = {value: _cell(*counts[key][value]) for value in sorted(counts[key])}
  return result


def score_items(
    items: Sequence[Mapping[str, Any]],
    predictions: Sequence[str],
    keys: Sequence[str] | None = None,
) -> tuple[list[bool], dict[str, Any]]:
  """Scores `predictions` (answer texts, one per item) -> (correct per item, breakdown)."""
  if len(items) != len(predictions):
    raise ValueError(f"{len(items)} items but {len(predictions)} predictions")
  correct = []
  for index, (item, prediction) in enumerate(zip(items, predictions)):
    for key in ("answer", "choices"):
      if key not in item:
        raise KeyError(f"{_item_id(item, index)} has no key {key!r}")
    correct.append(score(prediction, item["answer"], item["choices"]))
  return correct, accuracy_breakdown(items, correct, keys)


def load_items(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """Benchmark items from a JSON list (MMAU) or JSON-lines file (MMAR)."""
  path = os.fspath(path)
  if not path.endswith(".jsonl"):
    return records.read_json_list(path)
  items = []
  with open(path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, 1):
      if line.strip():
        try:
          items.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{line_number}: not a JSON object: {e}") from e
  return items


def write_predictions(
    path: str | os.PathLike[str],
    items: Iterable[Mapping[str, Any]],
    predictions: Iterable[str],
    benchmark: str = "mmau",
    key: str | None = None,
) -> None:
  """Writes the official evaluation input: each item plus its prediction.

  The key is `model_prediction` for MMAU and `answer_prediction` for MMAR (what their
  `evaluation.py --input FILE` reads) unless `key` is given. A `.jsonl` path gets one item a
  line, any other path a JSON list. Missing predictions must be passed as "" (the official
  scripts skip items without the key, which would inflate accuracy).
  """
  if key is None:
    if benchmark not in PREDICTION_KEYS:
      raise ValueError(f"unknown benchmark {benchmark!r}; known: {sorted(PREDICTION_KEYS)}")
    key = PREDICTION_KEYS[benchmark]
  items, predictions = list(items), list(predictions)
  if len(items) != len(predictions):
    raise ValueError(f"{len(items)} items but {len(predictions)} predictions for {path}")
  rows = []
  for index, (item, prediction) in enumerate(zip(items, predictions)):
    if not isinstance(prediction, str):
      raise TypeError(f"prediction for {_item_id(item, index)} is {type(prediction).__name__}, not str")
    rows.append({**item, key: prediction})
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    if path.endswith(".jsonl"):
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
      json.dump(rows, f, ensure_ascii=False, indent=2)


def evaluate_file(
    path: str | os.PathLike[str],
    benchmark: str = "mmau",
    key: str | None = None,
    keys: Sequence[str] | None = None,
) -> dict[str, Any]:
  """Scores a predictions file as the official script does, plus `no_prediction`.

  Like the official scripts, items without the prediction key are skipped (and counted in
  `no_prediction`) and the prediction is scored with plain `string_match` (no letter
  resolution), so this reproduces the official number for a file.
  """
  key = key or PREDICTION_KEYS[benchmark]
  items = load_items(path)
  scored = [item for item in items if key in item]
  correct = [string_match(str(item[key]), item["answer"], item["choices"]) for item in scored]
  result = accuracy_breakdown(scored, correct, keys or BREAKDOWN_KEYS[benchmark])
  result["no_prediction"] = len(items) - len(scored)
  return result
