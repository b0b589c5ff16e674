"""Host-side Python reward components: mixed with jitted ones, any subset of rows, errors."""

import jax
import ml_collections
import numpy as np
import pytest

from cesar_jax import rewards
from cesar_jax.rewards import host
from cesar_jax.rewards import registry
from cesar_jax.rewards import testing


@registry.register_python("says_answer", overwrite=True)
def _says_answer(completions, examples, **kw):
  """A researcher's TRL-style reward: 1.5 when the correct option's text occurs anywhere."""
  assert "config" in kw and "tokenizer" in kw
  return [1.5 * (str(ex["answer"]).lower() in c.lower()) for c, ex in zip(completions, examples)]


@registry.register_python("length_bonus", overwrite=True)
def _length_bonus(completions, examples, **kw):
  return [len(c) / 100.0 for c in completions]


def _data(n=24, seed=0):
  rng = np.random.default_rng(seed)
  examples = [testing.example(rng, i) for i in range(n)]
  texts = [testing.completion(rng, ex, testing.KINDS[i % len(testing.KINDS)])
           for i, ex in enumerate(examples)]
  return texts, examples


def _mixed_config():
  config = rewards.default_config("cesar")
  config.weights.says_answer = 0.5
  config.weights.length_bonus = 2.0
  return config


def test_mixed_config_equals_components_computed_apart(builtin_tok, scorer, same):
  texts, examples = _data()
  config = _mixed_config()
  ours, ref = scorer.texts(builtin_tok, texts, examples, rewards.default_config("cesar"))
  says = np.array(_says_answer(texts, examples, config=None, tokenizer=None), np.float32)
  bonus = np.array(_length_bonus(texts, examples), np.float32)
  assert 0 < np.count_nonzero(says) < len(says)
  for score in (rewards.score_texts, rewards.reference.score_texts):
    out = score(texts, examples, config, builtin_tok)
    assert list(out) == list(config.weights.keys()) + ["total"]
    for k in ("accuracy", "format", "consistency", "keywords", "overthinking"):
      np.testing.assert_array_equal(out[k], ref[k], err_msg=k)
    np.testing.assert_array_equal(out["says_answer"], says)
    np.testing.assert_array_equal(out["length_bonus"], bonus)
    np.testing.assert_allclose(out["total"], ref["total"] + 0.5 * says + 2.0 * bonus, rtol=1e-6)


def test_host_values_work_on_any_subset_of_rows(builtin_tok):
  texts, examples = _data()
  config = _mixed_config()
  names, full = rewards.host_values(config, texts, examples, tokenizer=builtin_tok)
  # Config order (ConfigDict keys are sorted).
  assert names == ("length_bonus", "says_answer") and full.shape == (24, 2)
  assert full.dtype == np.float32
  rows = [3, 17, 5, 0]
  _, part = rewards.host_values(config, [texts[i] for i in rows], [examples[i] for i in rows],
                                tokenizer=builtin_tok)
  np.testing.assert_array_equal(part, full[rows])
  none = rewards.default_config("outcome")
  assert rewards.host_values(none, texts, examples) == ((), pytest.approx(np.zeros([24, 0])))


def test_reward_fn_under_jit_with_groups_and_host_values(builtin_tok):
  """The trainer's call: one row per prompt + sample_to_example, host values per completion,
  batch sharded over the 8 forced host devices."""
  texts, examples = _data(32)
  prompts = examples[::4]
  per_row = [prompts[i // 4] for i in range(32)]
  config = _mixed_config()
  fn = rewards.build(config, builtin_tok)
  assert fn.host_names == ("length_bonus", "says_answer")
  ids, lengths = rewards.api.pad_ids(builtin_tok.encode_batch(texts), builtin_tok.pad_id, 256)
  arrays = rewards.encode_examples(prompts, builtin_tok, config)
  arrays["sample_to_example"] = np.repeat(np.arange(8), 4).astype(np.int32)
  _, values = rewards.host_values(config, texts, per_row, tokenizer=builtin_tok)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  out = rewards.apply(fn, *jax.device_put((ids, lengths, arrays, values), rows))
  want = rewards.reference.score_texts(texts, per_row, config, builtin_tok)
  for k in want:
    np.testing.assert_allclose(np.asarray(out[k]), want[k], rtol=1e-6, err_msg=k)
  with pytest.raises(ValueError, match=r"host_values of shape \(32, 2\) needed"):
    fn(ids, lengths, arrays)


def test_local_rows_and_rollout_values(builtin_tok):
  mesh = jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  x = np.arange(16 * 3).reshape(16, 3)
  sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
  index, rows = rewards.local_rows(sharded)
  np.testing.assert_array_equal(index, np.arange(16))
  np.testing.assert_array_equal(rows, x)
  texts, examples = _data(8)
  tokens, lengths = rewards.api.pad_ids(builtin_tok.encode_batch(texts), builtin_tok.pad_id, 64)
  prompt_index = np.repeat(np.arange(4), 2).astype(np.int32)  # G = 2: rows 2p, 2p + 1
  prompts = [examples[0], examples[2], examples[4], examples[6]]
  config = _mixed_config()
  got = host.rollout_values(config, tokens, lengths, prompt_index, prompts, builtin_tok)
  _, want = rewards.host_values(config, builtin_tok.decode_batch(
      [t[:n] for t, n in zip(tokens, lengths)]), [prompts[i] for i in prompt_index],
      tokenizer=builtin_tok)
  np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match="rows of prompts 0..3 but 2 examples"):
    host.rollout_values(config, tokens, lengths, prompt_index, prompts[:2], builtin_tok)


def test_errors_name_the_component_and_the_example():
  texts, examples = _data(6)
  config = rewards.default_config("outcome")

  @registry.register_python("raises_on_ex3", overwrite=True)
  def _raises(completions, examples, **kw):
    return [1.0 if ex["id"] != "ex3" else {}["missing"] for ex in examples]

  @registry.register_python("nan_on_ex4", overwrite=True)
  def _nan(completions, examples, **kw):
    return [float("nan") if ex["id"] == "ex4" else 0.0 for ex in examples]

  @registry.register_python("batch_only", overwrite=True)
  def _batch_only(completions, examples, **kw):
    if len(completions) > 1:
      raise RuntimeError("needs one row at a time")
    return [0.0]

  @registry.register_python("short", overwrite=True)
  def _short(completions, examples, **kw):
    return [0.0]

  cases = [
      ("raises_on_ex3", r"'raises_on_ex3' raised on example 'ex3' \(row 3\): KeyError"),
      ("nan_on_ex4", r"'nan_on_ex4' returned nan for example 'ex4' \(row 4\)"),
      ("batch_only", r"'batch_only' raised on the batch of examples 'ex0', .*'ex5' \(on no single "
                     r"row alone\): RuntimeError: needs one row"),
      ("short", r"'short' returned 1 values for 6 completions"),
  ]
  for name, message in cases:
    cfg = ml_collections.ConfigDict(config.to_dict())
    cfg.weights[name] = 1.0
    with pytest.raises(rewards.RewardError, match=message):
      rewards.host_values(cfg, texts, examples)
  with pytest.raises(ValueError, match="already registered"):
    registry.register_python("accuracy", _short)
  assert registry.is_python("says_answer") and not registry.is_python("accuracy")
