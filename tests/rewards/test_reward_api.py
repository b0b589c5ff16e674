"""The public API: build / RewardFn under jit, example arrays, registry and presets, errors."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cesar_jax import rewards
from cesar_jax.rewards import registry
from cesar_jax.rewards import testing


@registry.register("short_answer", overwrite=True)
def _short_answer(batch, config):
  """A researcher's component: 1 for a well-formed answer of at most max_words words."""
  p = batch.parsed
  return (p.format_ok & (p.scan.answer_words <= config.short_answer.max_words)).astype(
      jnp.float32)


def test_trainer_style_call_with_groups_and_a_registered_component(builtin_tok):
  """RewardFn passed into the trainer's own jit, the batch sharded over 8 devices (tests force
  8 host devices); G samples per prompt through sample_to_example; a component registered
  outside the package, selected by the config alone."""
  config = rewards.default_config("cesar")
  config.short_answer = ml_collections.ConfigDict({"max_words": 1})
  config.weights.short_answer = 0.5
  prompts, group = 8, 8
  rng = np.random.default_rng(0)
  examples = [testing.example(rng, i) for i in range(prompts)]
  texts = [testing.completion(rng, examples[i // group], testing.KINDS[i % 5])
           for i in range(prompts * group)]
  ids, lengths = rewards.api.pad_ids(builtin_tok.encode_batch(texts), builtin_tok.pad_id, 256)
  ids, lengths = ids[:, :256], np.minimum(lengths, 256)  # Cut at the 256-token limit.
  reward_fn = rewards.build(config, builtin_tok)

  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

  @functools.partial(jax.jit, out_shardings=(None, rows))
  def train_step(fn, ids, lengths, arrays):
    out = fn(ids, lengths, arrays)
    return out["total"].mean(), out

  arrays = rewards.encode_examples(examples, builtin_tok, config)
  arrays["sample_to_example"] = np.repeat(np.arange(prompts), group).astype(np.int32)
  ids, lengths, arrays = jax.device_put((ids, lengths, arrays), rows)
  _, grouped = train_step(reward_fn, ids, lengths, arrays)
  assert grouped["total"].sharding.spec == jax.sharding.PartitionSpec("data")
  ids, lengths = np.asarray(ids), np.asarray(lengths)
  # The reference, on one example per completion, gives the built-in components.
  texts = builtin_tok.decode_batch([list(x[:n]) for x, n in zip(ids, lengths)])
  per_sample = [examples[i // group] for i in range(prompts * group)]
  ref = rewards.reference.score_texts(texts, per_sample, rewards.default_config("cesar"),
                                      builtin_tok)
  for k in ("accuracy", "format", "consistency", "keywords", "overthinking"):
    np.testing.assert_array_equal(np.asarray(grouped[k]), ref[k], err_msg=k)
  parsed = [rewards.reference.parse(t, ex, config, builtin_tok) for t, ex in zip(texts, per_sample)]
  expected = np.array([p.format_ok and len(p.answer_words or []) <= 1 for p in parsed], np.float32)
  np.testing.assert_array_equal(np.asarray(grouped["short_answer"]), expected)
  assert 0 < expected.sum() < len(expected)
  np.testing.assert_allclose(np.asarray(grouped["total"]), ref["total"] + 0.5 * expected,
                             rtol=1e-6)
  with pytest.raises(KeyError, match="no plain-Python reference"):
    rewards.reference.score_texts(texts[:1], examples[:1], config, builtin_tok)


def test_traced_knobs_do_not_recompile(builtin_tok, scorer):
  rng = np.random.default_rng(1)
  examples = [testing.example(rng, i) for i in range(4)]
  texts = [testing.completion(rng, ex) for ex in examples]
  config = rewards.default_config("cesar")
  scorer.texts(builtin_tok, texts, examples, config)
  before = rewards.apply._cache_size()
  config.weights.accuracy = 2.0
  config.overthinking.max_think_tokens = 100
  config.keywords.domain.cap = 3.0
  config.concepts.min_word_length = 4
  config.format.answer_only = True
  ours, ref = scorer.texts(builtin_tok, texts, examples, config)
  assert rewards.apply._cache_size() == before
  for k in ref:
    np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)


def test_reward_fn_is_a_pytree(builtin_tok):
  fn = rewards.api.cached_build(rewards.default_config(), builtin_tok)
  leaves, treedef = jax.tree.flatten(fn)
  assert leaves and all(isinstance(x, jax.Array) for x in leaves)
  assert jax.tree.unflatten(treedef, leaves).names == fn.names


def test_score_texts_shapes(builtin_tok):
  config = rewards.default_config("outcome")
  assert {k: v.shape for k, v in rewards.score_texts([], [], config, builtin_tok).items()} == {
      "accuracy": (0,), "format": (0,), "total": (0,)}
  with pytest.raises(ValueError, match="2 completions but 1 examples"):
    rewards.score_texts(["a", "b"], [testing.example(np.random.default_rng(0))], config,
                        builtin_tok)


def test_bad_examples_are_named():
  config = rewards.default_config()
  good = {"id": "x1", "question": "q?", "choices": ["a", "b"], "answer": "b"}
  bad = [
      (dict(good, answer="c"), r"x1: answer 'c' is not one of its choices"),
      (dict(good, answer=5), r"x1: answer index 5 outside the 2 choices"),
      ({k: v for k, v in good.items() if k != "choices"}, r"x1 has no 'choices' key"),
      (dict(good, choices=[]), r"x1: empty 'choices'"),
      (dict(good, choices=[str(i) for i in range(9)], answer="1"), r"x1: 9 choices > limits"),
      (dict(good, choices=["b", " ".join(["w"] * 60)]), r"x1: option 1 has 60 words > limits"),
      (dict(good, question=" ".join(f"w{i}" for i in range(200))),
       r"x1: \d+ question concepts > limits"),
  ]
  for ex, message in bad:
    with pytest.raises((ValueError, KeyError), match=message):
      rewards.encode_examples([ex], None, config)
  # Case and surrounding spaces of the answer text are forgiven.
  arrays = rewards.encode_examples([dict(good, answer=" B ")], None, config)
  assert arrays["answer_index"][0] == 1


def test_example_arrays_row_count_is_checked(builtin_tok):
  fn = rewards.api.cached_build(rewards.default_config(), builtin_tok)
  arrays = rewards.encode_examples([testing.example(np.random.default_rng(0))], None,
                                   rewards.default_config())
  with pytest.raises(ValueError, match="1 rows for 2 completions"):
    fn(jnp.zeros([2, 8], jnp.int32), jnp.zeros([2], jnp.int32), arrays)


def test_presets_and_registry():
  assert dict(rewards.default_config("cesar").weights) == {
      "accuracy": 5.0, "format": 1.0, "consistency": 1.0, "keywords": 1.0, "overthinking": 1.0}
  assert dict(rewards.default_config("outcome").weights) == {"accuracy": 1.0, "format": 1.0}
  assert dict(rewards.default_config("ke_omni_r").weights) == {"accuracy": 2.0, "format": 1.0}
  assert rewards.default_config().overthinking.max_think_tokens == 256
  rewards.register_preset("accuracy_only", (("accuracy", 1.0),))
  assert dict(rewards.default_config("accuracy_only").weights) == {"accuracy": 1.0}
  with pytest.raises(ValueError, match="already registered"):
    registry.register("accuracy", lambda batch, config: None)
  with pytest.raises(KeyError, match="unknown reward component 'nope'"):
    registry.get("nope")

