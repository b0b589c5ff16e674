"""The sampler on tiny models: cache decoding vs full forwards, budgets, groups, no recompiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sampler_fixtures as F
from flax import nnx
from cesar_jax.sampling import batching
from cesar_jax.sampling import sampler as sampler_lib
from cesar_jax.sampling import budgets as budgets_lib

Y, EOS = F.Y, F.EOS
THINK, END_THINK, ANSWER, END_ANSWER = F.THINK, F.END_THINK, F.ANSWER, F.END_ANSWER


@pytest.fixture(scope="module")
def random_model():
  return F.random_model()


@pytest.fixture(scope="module")
def scripted():
  return F.scripted_model()


@pytest.fixture(scope="module")
def sampler(random_model):
  """The sampler `sample()` uses for this config (the models share a graph), so all tests share
  its compiled executables: every call below is 2 prompts x 3 samples in the 16 bucket."""
  return sampler_lib._cached_sampler(nnx.graphdef(random_model), F.sampler_config(), None)  # pylint: disable=protected-access


def _generate(sampler, model, prompts, num_samples=3, **kw):
  return sampler.generate(nnx.state(model), prompts, num_samples=num_samples, **kw).to_numpy()


@nnx.jit
def _full_logits(model, ids, mask, features, feature_mask):
  return model(ids, features, feature_mask, mask)


def test_greedy_cache_decoding_equals_full_forward_rollout(sampler, random_model):
  """Token for token against argmax of full (cache-free) forwards, left padding included; the
  three greedy samples of a prompt share its prefill and are identical."""
  prompts = F.prompts([2, 7], feature_lengths=[32, 20], seed=1)
  steps = 6
  out = _generate(sampler, random_model, prompts, greedy=True, max_new_tokens=steps)
  np.testing.assert_array_equal(out.prompt_index, [0, 0, 0, 1, 1, 1])
  np.testing.assert_array_equal(out.tokens, np.repeat(out.tokens[::3], 3, axis=0))
  batch = batching.make_batch(prompts, buckets=(16,), pad_id=F.PAD)
  # Right-pad the left-padded prompts by `steps` columns, filled as the rollout goes (causal
  # attention: logits at column P-1+t never see the columns after it).
  p = batch.prompt_length
  ids = np.pad(batch.input_ids, ((0, 0), (0, steps)))
  mask = np.pad(batch.attention_mask, ((0, 0), (0, steps)))
  want_tokens, want_logp = [], []
  for t in range(steps):
    logits = _full_logits(random_model, jnp.asarray(ids), jnp.asarray(mask),
                          jnp.asarray(batch.input_features),
                          jnp.asarray(batch.feature_attention_mask))[:, p - 1 + t]
    token = np.asarray(jnp.argmax(logits, -1))
    want_tokens.append(token)
    want_logp.append(np.asarray(jax.nn.log_softmax(logits))[np.arange(2), token])
    ids[:, p + t], mask[:, p + t] = token, 1
  np.testing.assert_array_equal(out.tokens[::3, :steps], np.stack(want_tokens, 1))
  np.testing.assert_allclose(out.logprobs[::3, :steps], np.stack(want_logp, 1), atol=1e-5)
  np.testing.assert_array_equal(out.tokens[:, steps:], F.PAD)
  assert out.finish_reasons == ["length"] * 6
  np.testing.assert_array_equal(out.lengths, [steps] * 6)
  np.testing.assert_array_equal(out.loss_mask, np.arange(16)[None].repeat(6, 0) < steps)


def test_scripted_model_natural_completion(sampler, scripted):
  out = _generate(sampler, scripted, F.prompts([4, 7]), greedy=True)
  want = [THINK, F.A, F.B, F.C, END_THINK, ANSWER, Y, END_ANSWER, EOS]
  np.testing.assert_array_equal(out.tokens[:, :9], [want] * 6)
  np.testing.assert_array_equal(out.tokens[:, 9:], F.PAD)  # padded after the stop token
  np.testing.assert_array_equal(out.lengths, [9] * 6)
  np.testing.assert_array_equal(out.think_lengths, [3] * 6)
  assert out.finish_reasons == ["stop"] * 6
  assert not out.budget_forced.any() and not out.forced.any()
  np.testing.assert_array_equal(out.loss_mask, np.arange(16)[None].repeat(6, 0) < 9)
  assert np.all(out.logprobs[:, 9:] == 0) and np.all(out.logprobs[:, :9] > -1e-3)  # confident


def test_mixed_budgets_in_one_batch(sampler, scripted):
  budgets = np.array([0, 1, 2, 3, 10, -1])  # Per row: 2 prompts x 3 samples.
  out = _generate(sampler, scripted, F.prompts([3, 6]), num_samples=3, budgets=budgets,
                  greedy=True)
  tail = [Y, END_ANSWER, EOS]
  want = {
      0: [ANSWER] + tail,
      1: [THINK, F.A, END_THINK, ANSWER] + tail,
      2: [THINK, F.A, F.B, END_THINK, ANSWER] + tail,
      3: [THINK, F.A, F.B, F.C, END_THINK, ANSWER] + tail,  # the budget lands on </think>
      10: [THINK, F.A, F.B, F.C, END_THINK, ANSWER] + tail,
      -1: [THINK, F.A, F.B, F.C, END_THINK, ANSWER] + tail,
  }
  for i, b in enumerate(budgets):
    n = len(want[b])
    np.testing.assert_array_equal(out.tokens[i, :n], want[b], err_msg=f"budget {b}")
    assert out.lengths[i] == n
  np.testing.assert_array_equal(out.think_lengths, [0, 1, 2, 3, 3, 3])
  np.testing.assert_array_equal(out.budget_forced, [1, 1, 1, 1, 0, 0])
  # Forced positions: <answer> at 0 for budget 0; </think> <answer> after L think tokens.
  for i, positions in enumerate([[0], [2, 3], [3, 4], [4, 5], [], []]):
    np.testing.assert_array_equal(np.flatnonzero(out.forced[i]), positions, err_msg=f"row {i}")
    assert not out.loss_mask[i, positions].any()
  # Forced tokens carry the model's log-prob of the forced token (low where it disagreed).
  assert out.logprobs[1, 2] < -5 and out.logprobs[3, 4] > -0.1
  assert out.finish_reasons == ["stop"] * 6


@pytest.mark.parametrize("seed", [0, 1])
def test_budget_never_exceeded_while_sampling(sampler, scripted, seed):
  """At temperature 4 the scripted model strays from its script about one token in five, so
  some rows think past their budget unless forced."""
  budgets = np.array([0, 1, 2, 4, 6, -1])
  out = _generate(sampler, scripted, F.prompts([5, 2], seed=3), num_samples=3, budgets=budgets,
                  temperature=4.0, key=jax.random.key(seed))
  limited = budgets >= 0
  assert np.all(out.think_lengths[limited] <= budgets[limited])
  np.testing.assert_array_equal(budgets_lib.think_lengths(out.tokens, F.TAGS), out.think_lengths)
  rows, cols = np.nonzero(out.forced[:, :-1] & (out.tokens[:, :-1] == END_THINK))
  assert np.all(out.forced[rows, cols + 1]) and np.all(out.tokens[rows, cols + 1] == ANSWER)
  assert out.budget_forced[1:5].any()  # the case is exercised: a positive budget was forced
  np.testing.assert_array_equal(out.tokens[budgets == 0, 0], ANSWER)


def test_samples_differ_within_a_group_and_the_notebook_api_matches(sampler, random_model):
  prompts = F.prompts([4, 7], seed=2)
  drawn = _generate(sampler, random_model, prompts, temperature=1.0, key=jax.random.key(3))
  assert len({tuple(r) for r in drawn.tokens[:3]}) == 3  # different samples within a group
  again = sampler_lib.sample(random_model, prompts, num_samples=3, temperature=1.0,
                             key=jax.random.key(3), config=F.sampler_config())
  np.testing.assert_array_equal(again.tokens, drawn.tokens)  # reproducible from the key
  np.testing.assert_array_equal(again.logprobs, drawn.logprobs)


def test_a_group_sharing_its_prompt_cache_samples_as_the_prompt_repeated(sampler, random_model):
  """G samples of a prompt read one prompt cache (`decoder.share_prefix`); the same prompts
  repeated G times (G = 1, one cache each) sample the same tokens and log-probs from the same
  key: row n draws by its index either way."""
  prompts = F.prompts([4, 7], feature_lengths=[32, 20], seed=6)
  shared = _generate(sampler, random_model, prompts, temperature=1.0, key=jax.random.key(4))
  repeated = {k: [v[i] for i in (0, 0, 0, 1, 1, 1)] if isinstance(v, list) else np.repeat(v, 3, 0)
              for k, v in prompts.items()}
  alone = _generate(sampler, random_model, repeated, num_samples=1, temperature=1.0,
                    key=jax.random.key(4))
  np.testing.assert_array_equal(shared.tokens, alone.tokens)
  np.testing.assert_allclose(shared.logprobs, alone.logprobs, atol=1e-5)
  assert len({tuple(r) for r in shared.tokens[:3]}) > 1  # sampled, not one greedy path


def test_prefill_in_passes_samples_as_one_pass(sampler, random_model):
  """`prefill_batch=1`: the prompts' encoder and prefill run one prompt at a time (lax.map),
  and the samples are those of one pass over all of them; a pass size that does not divide
  the batch is an error naming the config field."""
  prompts = F.prompts([4, 7, 2, 9], feature_lengths=[32, 20, 11, 32], seed=8)
  kw = dict(num_samples=2, temperature=1.0, key=jax.random.key(5))
  one = sampler.generate(nnx.state(random_model), prompts, **kw).to_numpy()
  passes = sampler_lib.Sampler.for_model(random_model, F.sampler_config(prefill_batch=1))
  got = passes.generate(nnx.state(random_model), prompts, **kw).to_numpy()
  np.testing.assert_array_equal(got.tokens, one.tokens)
  np.testing.assert_allclose(got.logprobs, one.logprobs, atol=1e-5)
  bad = sampler_lib.Sampler.for_model(random_model, F.sampler_config(prefill_batch=3))
  with pytest.raises(ValueError, match=r"config.sampling.prefill_batch.*4 prompts"):
    bad.generate(nnx.state(random_model), prompts, **kw)


def test_stop_ids_and_max_new_tokens_are_per_call(sampler, scripted):
  prompts = F.prompts([4, 6])
  out = _generate(sampler, scripted, prompts, greedy=True, stop_ids=(END_THINK, EOS))
  np.testing.assert_array_equal(out.lengths, [5] * 6)
  out = _generate(sampler, scripted, prompts, greedy=True, max_new_tokens=3)
  np.testing.assert_array_equal(out.lengths, [3] * 6)
  assert out.finish_reasons == ["length"] * 6
  np.testing.assert_array_equal(out.think_lengths, [2] * 6)


def test_compile_count_constant_across_controls_and_lengths_within_a_bucket(sampler, scripted):
  params = nnx.state(scripted)
  calls = [
      dict(lengths=[3, 5], budgets=[0, 3], temperature=1.0),
      dict(lengths=[4, 2], budgets=[7, -1], temperature=0.3, top_p=0.9),
      dict(lengths=[6, 6], budgets=[1, 2], top_k=5, greedy=True, max_new_tokens=9),
      dict(lengths=[1, 5], budgets=None, temperature=2.0, stop_ids=(EOS, END_ANSWER)),
      dict(lengths=[2, 4], budgets=[5, 9, 2, 0, 4, -1], modes="extend",
           continuation_ids=F.CONTINUATION, temperature=1.0),
      dict(lengths=[5, 3], budgets=[6, 6, 3, 3, 8, 1], modes=[1, 0, 1, 0, 1, 0],
           continuation_ids=(F.W,), greedy=True),
  ]
  before = sampler.compile_count
  counts = []
  for i, kw in enumerate(calls):
    sampler.generate(params, F.prompts(kw.pop("lengths"), seed=i), num_samples=3,
                     key=jax.random.key(i), **kw)
    counts.append(sampler.compile_count)
  assert counts[0] - before in (0, 2)  # one prefill + one decode, unless an earlier test did
  assert counts == [counts[0]] * len(calls)


def test_extend_mode_exact_think_lengths_mixed_with_cap_in_one_batch(sampler, scripted):
  """Scripted path `<think> a b c </think> ...`; continuation `W V` (the model would follow W
  with y, V with a). Extend rows think exactly their budget; the cap row is left alone."""
  budgets = np.array([5, 4, 7, 5, 9, 3])
  modes = ["extend", "extend", "extend", "forced", "extend", "extend"]
  out = _generate(sampler, scripted, F.prompts([3, 6]), num_samples=3, budgets=budgets,
                  modes=modes, continuation_ids=F.CONTINUATION, greedy=True)
  W, V, A, B, C = F.W, F.V, F.A, F.B, F.C
  tail = [END_THINK, ANSWER, Y, END_ANSWER, EOS]
  want = [
      ([THINK, A, B, C, W, V] + tail, [4, 5, 6, 7]),             # extended once to 5
      ([THINK, A, B, C, W] + tail, [4, 5, 6]),                   # budget inside "W V"
      ([THINK, A, B, C, W, V, A, B] + tail, [4, 5, 8, 9]),       # 7: the model resumes
      ([THINK, A, B, C] + tail, []),                             # cap 5 > natural 3
      ([THINK, A, B, C, W, V, A, B, C, W] + tail, [4, 5, 9, 10, 11]),  # suppressed twice
      ([THINK, A, B, C] + tail, [4, 5]),                         # budget = natural length
  ]
  for i, (tokens, positions) in enumerate(want):
    np.testing.assert_array_equal(out.tokens[i, :len(tokens)], tokens, err_msg=f"row {i}")
    assert out.lengths[i] == len(tokens), f"row {i}"
    np.testing.assert_array_equal(np.flatnonzero(out.forced[i]), positions, err_msg=f"row {i}")
    # Continuation and forced tokens are out of the GRPO loss; the sampled ones are in.
    np.testing.assert_array_equal(out.loss_mask[i], out.valid[i] & ~out.forced[i])
    assert not out.loss_mask[i, positions].any()
  np.testing.assert_array_equal(out.think_lengths, [5, 4, 7, 3, 9, 3])
  np.testing.assert_array_equal(budgets_lib.think_lengths(out.tokens, F.TAGS), out.think_lengths)
  np.testing.assert_array_equal(out.budget_forced, [1, 1, 1, 0, 1, 1])
  # The forced V after W carries the model's (low) log-prob: it wanted y.
  assert out.logprobs[0, 5] < -5 and out.logprobs[0, 6] < -5  # V, and </think> for c->W
  assert out.finish_reasons == ["stop"] * 6


@pytest.mark.parametrize("seed", [0, 1])
def test_extend_rows_never_close_early_while_sampling(sampler, scripted, seed):
  """At temperature 4 the model strays; an extend row that closes its span does so exactly at
  its budget, a cap row never past it."""
  budgets = np.array([2, 6, 9, 6, 9, -1])
  modes = np.array([1, 1, 1, 0, 0, 1])
  out = _generate(sampler, scripted, F.prompts([5, 2], seed=3), num_samples=3, budgets=budgets,
                  modes=modes, continuation_ids=F.CONTINUATION, temperature=4.0,
                  key=jax.random.key(seed))
  np.testing.assert_array_equal(budgets_lib.think_lengths(out.tokens, F.TAGS), out.think_lengths)
  limited = budgets >= 0
  assert np.all(out.think_lengths[limited] <= budgets[limited])
  closed = np.array([END_THINK in row[:n] for row, n in zip(out.tokens, out.lengths)])
  ext = limited & (modes == 1)
  np.testing.assert_array_equal(out.think_lengths[ext & closed], budgets[ext & closed])
  assert (ext & closed).sum() >= 2  # the case is exercised


def test_extend_needs_a_continuation_and_known_modes():
  sampler = sampler_lib.Sampler(None, F.sampler_config())
  with pytest.raises(ValueError, match="continuation"):
    sampler.controls(2, budgets=[3, 4], modes="extend")
  with pytest.raises(ValueError, match="sometimes"):
    sampler.controls(2, budgets=[3, 4], modes=["extend", "sometimes"], continuation_ids=(F.W,))
  with pytest.raises(ValueError, match="reasoning tags"):
    sampler.controls(2, budgets=[3, 4], modes="extend", continuation_ids=(F.W, END_THINK))
  with pytest.raises(ValueError, match="max_continuation_ids"):
    sampler.controls(2, budgets=3, modes="extend", continuation_ids=tuple(range(40, 50)))
  with pytest.raises(ValueError, match="continuation_ids"):
    F.sampler_config(budget_mode="extend")
  ok = sampler_lib.Sampler(None, F.sampler_config(budget_mode="extend",
                                                  continuation_ids=F.CONTINUATION))
  c = ok.controls(2, budgets=[3, -1])
  np.testing.assert_array_equal(c.modes, [budgets_lib.MODE_EXTEND] * 2)
  np.testing.assert_array_equal(c.continuation, [F.W, F.V] + [-1] * 6)


def test_prompts_pad_to_their_bucket():
  cfg = F.sampler_config()
  for lengths, width in [([1, 7], 16), ([3, 5], 16), ([20, 3], 32), ([7, 8], 32)]:
    batch = batching.make_batch(F.prompts(lengths), buckets=cfg.prompt_buckets, pad_id=F.PAD)
    assert batch.input_ids.shape == (2, width)
    np.testing.assert_array_equal(batch.lengths, np.array(lengths) + 9)  # + 8 audio + 1
    assert np.all(batch.attention_mask[:, -1] == 1)  # left-padded


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match="largest prompt bucket"):
    batching.bucket_length(40, (16, 32))
  with pytest.raises(ValueError, match="budget_mode"):
    F.sampler_config(budget_mode="sometimes")
  sampler = sampler_lib.Sampler(None, F.sampler_config())
  with pytest.raises(ValueError, match="budgets"):
    sampler.controls(4, budgets=[1, 2, 3])
  with pytest.raises(ValueError, match="max_new_tokens"):
    sampler.controls(4, max_new_tokens=17)


def test_left_pad_moves_real_tokens_flush_right():
  ids = np.array([[1, 2, 0, 0], [0, 3, 4, 5]])
  mask = np.array([[1, 1, 0, 0], [0, 1, 1, 1]])
  out_ids, out_mask = batching.left_pad(ids, mask, 5, pad_id=9)
  np.testing.assert_array_equal(out_ids, [[9, 9, 9, 1, 2], [9, 9, 3, 4, 5]])
  np.testing.assert_array_equal(out_mask, [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]])


def test_prompted_mode_never_forces():
  sampler = sampler_lib.Sampler(None, F.sampler_config(budget_mode="prompted"))
  np.testing.assert_array_equal(sampler.controls(3, budgets=[0, 5, 9]).budgets, [-1, -1, -1])
  sampler = sampler_lib.Sampler(None, F.sampler_config())
  np.testing.assert_array_equal(sampler.controls(3, budgets=[0, 5, 9]).budgets, [0, 5, 9])
  np.testing.assert_array_equal(sampler.controls(2, budgets=None).budgets, [-1, -1])


def test_typed_and_raw_keys_give_the_same_controls():
  sampler = sampler_lib.Sampler(None, F.sampler_config())
  typed = sampler.controls(2, key=jax.random.key(5)).key
  raw = sampler.controls(2, key=jax.random.PRNGKey(5)).key
  np.testing.assert_array_equal(typed, raw)
  assert typed.dtype == np.uint32
