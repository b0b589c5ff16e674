"""The trainer's reward lines: the examples a Python reward sees carry every field of the record."""

import numpy as np

from cesar_jax.rl import trainer


def _batch():
  events = [{"kind": "beep", "onset_s": 0.5}]
  obj = lambda *xs: np.array(list(xs) + [None], dtype=object)[:-1]
  return {
      "prompt_ids": np.zeros([2, 4], np.int32), "prompt_mask": np.ones([2, 4], np.int32),
      "input_features": np.zeros([2, 2, 3], np.float32),
      "feature_mask": np.ones([2, 3], np.int32), "num_audio_tokens": np.ones([2], np.int32),
      "example_mask": np.ones([2], np.int32), "index": np.array([7, 9]),
      "id": obj("a", "b"), "question": obj("q1?", "q2?"), "choices": obj(("1", "2"), ("x", "y")),
      "answer": obj("2", "x"), "task": obj("sound", "music"),
      # In-memory synthetic records hold their own fields in `extra`; tfds ones as columns.
      "extra": obj({"events": events, "trace": "t"}, {}),
  }


def test_examples_carry_every_field_of_the_record():
  batch = _batch()
  examples = trainer._examples(batch, think_budget=None)
  assert [ex["id"] for ex in examples] == ["a", "b"]
  assert examples[0]["events"] == [{"kind": "beep", "onset_s": 0.5}]
  assert examples[0]["trace"] == "t" and "events" not in examples[1]
  assert examples[1]["choices"] == ["x", "y"] and examples[0]["task"] == "sound"
  assert examples[0]["index"] == 7
  for ex in examples:
    assert not set(ex) & set(trainer._MODEL_INPUTS) and "think_budget" not in ex
  batch["events"] = np.array([None, None], dtype=object)  # A column wins over `extra`.
  assert trainer._examples(batch, think_budget=0)[0]["events"] is None
  assert all(ex["think_budget"] == 0 for ex in trainer._examples(batch, think_budget=0))
