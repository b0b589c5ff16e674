"""Tests for cesar_jax.eval.scoring: the official MMAU / MMAR string_match and its helpers."""

import json
import re

import pytest

from cesar_jax.eval import scoring

CHOICES = ["Man", "Woman", "Child", "Robot"]
BENCHMARK_FILES = ["mmau-test-mini-v05.15.25.json", "mmau-test-mini-v2024.json", "MMAR-meta.jsonl"]


def _reference_match(answer, prediction, choices):
  """The official rule restated independently (MMAU/MMAR evaluation.py), for parity checks."""
  words = lambda s: {w for w in re.findall(r"\b\w+\b", s.lower())}
  pred, ans = words(prediction), words(answer)
  if len(pred) == 0:
    return False
  wrong = set()
  for c in choices:
    if words(c) == ans:
      continue
    wrong.update(w for w in words(c) if w not in ans)
  return all(w in pred for w in ans) and not any(w in wrong for w in pred)


@pytest.mark.parametrize("prediction, expected", [
    ("Man", True),
    ("man", True),                       # case-insensitive
    ("MAN.", True),                      # punctuation is not a word
    ("The speaker is a man.", True),     # extra words allowed
    ("Woman", False),                    # another option
    ("a man or a woman", False),         # mentions a wrong option's word
    ("", False),                         # empty prediction
    ("...", False),                      # no word at all
    ("Robot man", False),
    ("human", False),                    # 'man' is not a word of 'human'
])
def test_string_match_hand_checked(prediction, expected):
  assert scoring.string_match(prediction, "Man", CHOICES) is expected


def test_string_match_shared_words():
  choices = ["Dog barking", "Cat barking", "Dog growling", "Silence"]
  assert scoring.string_match("a dog barking loudly", "Dog barking", choices)
  # 'barking' is an answer word, so it is not a wrong word even though 'Cat barking' has it.
  assert not scoring.string_match("barking", "Dog barking", choices)   # 'dog' missing
  assert not scoring.string_match("dog barking, not growling", "Dog barking", choices)
  assert not scoring.string_match("dog barking or a cat", "Dog barking", choices)


def test_string_match_keeps_official_quirk():
  # An option with the answer's word set is not a wrong option (order-insensitive match).
  choices = ["Guitar, Piano", "Piano, Guitar", "Piano, Guitar, Piano", "Drums"]
  assert scoring.string_match("Piano, Guitar", "Guitar, Piano", choices)
  assert not scoring.string_match("Drums", "Guitar, Piano", choices)


@pytest.mark.parametrize("prediction, index", [
    ("B", 1), ("(B)", 1), ("(b)", 1), ("B.", 1), ("B)", 1), ("Option B", 1), ("option b", 1),
    ("Answer: C", 2), ("The answer is (D).", 3), (" A ", 0),
    ("b", None),        # a bare lower-case letter is a word, not a letter
    ("E", None),        # beyond the 4 options
    ("B dog", None), ("Woman", None), ("", None),
])
def test_parse_option_letter(prediction, index):
  assert scoring.parse_option_letter(prediction, 4) == index


def test_score_resolves_letters_before_string_match():
  assert scoring.score("B", "Woman", CHOICES)
  assert scoring.score("(b)", "Woman", CHOICES)
  assert scoring.score("Option B", "Woman", CHOICES)
  assert not scoring.score("C", "Woman", CHOICES)
  assert not scoring.score("E", "Woman", CHOICES)
  assert scoring.score("woman", "Woman", CHOICES)
  # string_match alone does not resolve letters.
  assert not scoring.string_match("B", "Woman", CHOICES)


def test_letter_that_is_an_option_text_is_not_resolved():
  chords = ["G", "A#", "D", "E"]
  assert scoring.score("D", "D", chords)        # the chord D, not option D (= "E")
  assert scoring.score("(D)", "D", chords)
  assert not scoring.score("E", "D", chords)
  assert scoring.score("C", "D", chords)        # no option "C": option C is "D"


def test_extract_answer():
  assert scoring.extract_answer("<think>a or b</think><answer> Woman </answer>") == "Woman"
  assert scoring.extract_answer("<answer>x</answer> then <answer>Man</answer>") == "Man"
  assert scoring.extract_answer("<think>no answer</think>") == ""
  assert scoring.extract_answer("<answer>multi\nline</answer>") == "multi\nline"


def test_breakdown_counts_list_categories_in_each():
  items = [
      {"id": "a", "task": "sound", "category": ["Reasoning", "Perception"], "sub-category": "x", "difficulty": "easy"},
      {"id": "b", "task": "sound", "category": "Reasoning", "sub-category": "x", "difficulty": "hard"},
      {"id": "c", "task": "music", "category": "Perception", "sub-category": "y", "difficulty": "hard"},
  ]
  result = scoring.accuracy_breakdown(items, [True, False, True])
  assert result["overall"] == {"correct": 2, "total": 3, "accuracy": pytest.approx(200 / 3)}
  assert result["task"]["sound"] == {"correct": 1, "total": 2, "accuracy": 50.0}
  assert result["category"]["Reasoning"] == {"correct": 1, "total": 2, "accuracy": 50.0}
  assert result["category"]["Perception"] == {"correct": 2, "total": 2, "accuracy": 100.0}
  assert result["difficulty"]["hard"]["correct"] == 1
  with pytest.raises(KeyError, match=r"item 1 \(id 'b'\) has no key 'difficulty'"):
    scoring.accuracy_breakdown([items[0], {"id": "b", "task": "sound", "category": "c",
                                           "sub-category": "x"}], [True, True])


@pytest.fixture(scope="module")
def benchmarks(shared_dir):
  root = shared_dir / "data" / "benchmarks"
  return {name: scoring.load_items(root / name) for name in BENCHMARK_FILES}


@pytest.mark.parametrize("name", BENCHMARK_FILES)
def test_correct_option_scores_correct_on_every_real_item(benchmarks, name):
  items = benchmarks[name]
  assert len(items) == 1000
  for item in items:
    answer, choices = item["answer"], item["choices"]
    letter = "ABCDEFGH"[choices.index(answer)]
    # Extra words could be words of a wrong option ("the"), so only case and punctuation vary.
    predictions = [answer, f" {answer.upper()}!"]
    if not any(c.strip().lower() == letter.lower() for c in choices):  # chord options "A", "D"...
      predictions += [letter, f"({letter})", f"Option {letter}"]
    for prediction in predictions:
      assert scoring.score(prediction, answer, choices), (item["id"], prediction)


@pytest.mark.parametrize("name", BENCHMARK_FILES)
def test_parity_with_reference_rule_on_real_items(benchmarks, name):
  """Every option, pairs of options and empty predictions agree with the restated rule."""
  checked = 0
  for item in benchmarks[name]:
    choices = item["choices"]
    predictions = choices + [choices[0] + " and " + choices[-1], "", "none of these"]
    for prediction in predictions:
      assert scoring.string_match(prediction, item["answer"], choices) == _reference_match(
          item["answer"], prediction, choices), (item["id"], prediction)
      checked += 1
  assert checked > 6000


def test_mmau_breakdown_sums(benchmarks):
  items = benchmarks["mmau-test-mini-v05.15.25.json"]
  predictions = [item["choices"][0] for item in items]
  correct, result = scoring.score_items(items, predictions)
  overall = result["overall"]
  assert overall["total"] == 1000 and overall["correct"] == sum(correct)
  # REFERENCES.md: sound 333, music 334, speech 333; easy 224, medium 540, hard 236.
  assert {k: v["total"] for k, v in result["task"].items()} == {"sound": 333, "music": 334, "speech": 333}
  assert {k: v["total"] for k, v in result["difficulty"].items()} == {"easy": 224, "medium": 540, "hard": 236}
  for key in ("task", "difficulty", "sub-category"):
    assert sum(v["total"] for v in result[key].values()) == 1000
    assert sum(v["correct"] for v in result[key].values()) == overall["correct"]
  extra = sum(len(set(i["category"])) - 1 for i in items if isinstance(i["category"], list))
  assert sum(v["total"] for v in result["category"].values()) == 1000 + extra


def _official_style_mmau(path):
  """The official MMAU evaluation loop, restated: json list, `model_prediction`, fixed tables."""
  with open(path) as f:
    data = json.load(f)
  task = {"sound": [0, 0], "music": [0, 0], "speech": [0, 0]}
  diff = {"easy": [0, 0], "hard": [0, 0], "medium": [0, 0]}
  corr = total = 0
  for sample in data:
    if "model_prediction" not in sample:
      continue
    ok = _reference_match(sample["answer"], sample["model_prediction"], sample["choices"])
    task[sample["task"]][0] += ok
    task[sample["task"]][1] += 1
    diff[sample["difficulty"]][0] += ok
    diff[sample["difficulty"]][1] += 1
    corr += ok
    total += 1
  return 100 * corr / total, total


def test_predictions_file_matches_official_format(benchmarks, tmp_path):
  items = benchmarks["mmau-test-mini-v2024.json"]
  predictions = [item["answer"] if i % 3 else item["choices"][-1] for i, item in enumerate(items)]
  path = tmp_path / "mmau_preds.json"
  scoring.write_predictions(path, items, predictions, benchmark="mmau")
  official_accuracy, total = _official_style_mmau(path)
  assert total == 1000
  ours = scoring.evaluate_file(path, "mmau")
  assert ours["overall"]["accuracy"] == pytest.approx(official_accuracy)
  assert ours["no_prediction"] == 0
  _, direct = scoring.score_items(items, predictions)
  assert direct["overall"] == ours["overall"]
  with open(path) as f:
    rows = json.load(f)
  assert rows[5] == {**items[5], "model_prediction": predictions[5]}


def test_mmar_predictions_file(benchmarks, tmp_path):
  items = benchmarks["MMAR-meta.jsonl"][:50]
  path = tmp_path / "mmar_preds.jsonl"
  scoring.write_predictions(path, items, [i["answer"] for i in items], benchmark="mmar")
  lines = path.read_text().splitlines()
  assert len(lines) == 50 and json.loads(lines[0])["answer_prediction"] == items[0]["answer"]
  result = scoring.evaluate_file(path, "mmar")
  assert result["overall"] == {"correct": 50, "total": 50, "accuracy": 100.0}
  assert sum(v["total"] for v in result["modality"].values()) == 50
  with pytest.raises(ValueError, match="50 items but 49 predictions"):
    scoring.write_predictions(path, items, ["x"] * 49, benchmark="mmar")
