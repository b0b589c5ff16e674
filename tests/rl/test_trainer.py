"""The GRPO update (train_step.py) on a very small model: parity, direction, skipping, compiles.

The end-to-end runs of the trainer (SFT then GRPO on the smoke config, the reward rising) are
in test_resume.py, which runs the real entry point in subprocesses.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cesar_jax import model_store
from cesar_jax.models import preset
from cesar_jax.parallel import mesh as mesh_lib
from cesar_jax.rl import grpo
from cesar_jax.rl import optim
from cesar_jax.rl import train_lib
from cesar_jax.rl import train_step

B, G, P, M, F, MELS, VOCAB = 4, 2, 8, 6, 16, 8, 64
AUDIO_ID = VOCAB - 1
N_AUDIO = 4  # audio tokens of 16 frames: ((16 - 1) // 2 + 1 - 2) // 2 + 1


def _model_config():
  return preset("tiny", num_hidden_layers=1, encoder_layers=1, num_mel_bins=MELS, d_model=16,
                encoder_attention_heads=2, encoder_ffn_dim=32, max_source_positions=F // 2,
                hidden_size=16, intermediate_size=32, num_attention_heads=2,
                num_key_value_heads=1, vocab_size=VOCAB, audio_token_id=AUDIO_ID)


@pytest.fixture(scope="module")
def mesh():
  return mesh_lib.make_mesh((1, 2, 4))  # 2 batch shards: B = 4 prompts split, minibatches too


def _model(mesh, seed=0):
  return model_store.init_model(_model_config(), seed, mesh)


def _copy(tree):
  return jax.tree.map(jnp.copy, tree)


def _rollouts(seed=0, advantages=None, loss_scale=1.0):
  """B left-padded prompts (text, 4 audio placeholders, text) and N = B * G completions."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, AUDIO_ID, size=(B, P)).astype(np.int32)
  mask = np.ones((B, P), np.int32)
  ids[:, 2:2 + N_AUDIO] = AUDIO_ID
  ids[1, :2], mask[1, :2] = 0, 0  # left padding
  lengths = rng.integers(2, M + 1, size=B * G)
  valid = np.arange(M)[None] < lengths[:, None]
  completions = np.where(valid, rng.integers(1, AUDIO_ID, size=(B * G, M)), 0).astype(np.int32)
  completions[3, 1] = AUDIO_ID  # a sampled <|AUDIO|> id stays a plain token
  loss_mask = valid.copy()
  loss_mask[0, 0] = False  # a forced token: attended to, not scored
  if advantages is None:
    advantages = rng.normal(size=B * G).astype(np.float32)
  return train_step.Rollouts(
      prompt_ids=ids, prompt_mask=mask,
      input_features=rng.normal(size=(B, MELS, F)).astype(np.float32),
      feature_mask=np.ones((B, F), np.int32), completions=completions, completion_mask=valid,
      loss_mask=loss_mask, old_logp=np.zeros((B * G, M), np.float32),
      advantages=np.asarray(advantages, np.float32), loss_scale=np.float32(loss_scale))


def _sgd(lr):
  """Plain SGD (with the project's non-finite skip): updates are -lr * gradient."""
  return optim.skip_nonfinite(optax.inject_hyperparams(optax.sgd)(learning_rate=lr))


def _adamw(lr):
  cfg = optim.default_config()
  cfg.update(lr=lr, total_steps=10, end_lr_ratio=1.0)
  return optim.make_optimizer(cfg)


@pytest.fixture(scope="module")
def policy(mesh):
  """(graphdef, initial params) shared by the tests; each update starts from a copy."""
  graphdef, params = nnx.split(_model(mesh))
  return graphdef, params


_UPDATES = {}


def _update_fn(mesh, policy, *, tx=("sgd", 1e-2), **step_kwargs):
  """A fresh train state and the (cached, so compiled once per variant) update."""
  graphdef, params = policy
  optimizer = _sgd(tx[1]) if tx[0] == "sgd" else _adamw(tx[1])
  step_kwargs.setdefault("loss", grpo.LossConfig())
  config = train_step.StepConfig(num_samples=G, **step_kwargs)
  # The update donates its state: start from a copy, keep the fixture's arrays alive.
  state, shardings = train_lib.init_train_state(_copy(params), optimizer, mesh)
  key = (tx, config)
  if key not in _UPDATES:
    _UPDATES[key] = train_step.GrpoUpdate(graphdef, optimizer, config, mesh, shardings)
  return graphdef, state, _UPDATES[key]


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, params, r: train_step.Rollouts):
  model = nnx.merge(graphdef, params)
  return train_step.completion_logits(model, r.prompt_ids, r.prompt_mask, r.input_features,
                                      r.feature_mask, r.completions, r.completion_mask, G)


def test_completion_logits_equal_the_full_forward(policy):
  """Audio encoded once per prompt and repeated == HF-style forward with one clip per row."""
  graphdef, params = policy
  r = _rollouts()
  clean = r.replace(completions=np.where(r.completions == AUDIO_ID, 1, r.completions))
  ids = np.concatenate([np.repeat(r.prompt_ids, G, 0), clean.completions], 1)
  attn = np.concatenate([np.repeat(r.prompt_mask, G, 0), r.completion_mask], 1)

  @jax.jit
  def full_forward(params, ids, feats, fmask, attn):
    return nnx.merge(graphdef, params)(ids, feats, fmask, attn)

  full = full_forward(params, ids, np.repeat(r.input_features, G, 0),
                      np.repeat(r.feature_mask, G, 0), attn)
  want = np.asarray(full)[:, P - 1:-1]  # position P - 1 + t predicts completion token t
  got = np.asarray(_logits(graphdef, params, clean))
  valid = r.completion_mask
  np.testing.assert_allclose(got[valid], want[valid], rtol=1e-4, atol=1e-5)

  # A sampled <|AUDIO|> id (row 3) is a plain token: the audio of the other rows stays put.
  mixed = np.asarray(_logits(graphdef, params, r))
  others = np.arange(B * G) != 3
  np.testing.assert_allclose(mixed[others], got[others], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mixed[3, :2], got[3, :2], rtol=1e-5, atol=1e-6)  # before it


def test_update_moves_logp_along_the_advantage_and_compiles_once(mesh, policy):
  """A small SGD step raises the advantage-weighted mean log-prob (the surrogate's gradient
  direction), i.e. the loss falls; the good samples gain, the bad ones lose."""
  graphdef, state, update = _update_fn(mesh, policy)
  adv = np.array([1, -1] * B, np.float32)  # in each group: first sample good, second bad
  r = _rollouts(advantages=adv)
  mask = r.loss_mask.astype(np.float32)

  def mean_logp(params):
    logp = grpo.token_log_probs(_logits(graphdef, params, r), r.completions)
    return np.asarray((logp * mask).sum(1) / mask.sum(1))

  before = mean_logp(state["params"])
  state, metrics = update(state, r)
  delta = mean_logp(state["params"]) - before
  assert np.dot(adv, delta) > 0, delta
  assert delta[adv > 0].mean() > 0 > delta[adv < 0].mean(), delta
  # On-policy (mu = 1): the loss is -mean(A) = 0 in value, the ratio exactly 1, nothing clipped.
  assert abs(float(metrics["loss"])) < 1e-6
  assert float(metrics["ratio/min"]) == float(metrics["ratio/max"]) == 1.0
  assert float(metrics["clip_frac/region"]) == 0.0
  assert float(metrics["grad_norm"]) > 0
  assert int(metrics["optim/skipped_steps"]) == 0
  np.testing.assert_allclose(float(metrics["optim/lr"]), 1e-2)
  # New values, same shapes: no recompilation.
  for seed in (1, 2):
    state, _ = update(state, _rollouts(seed=seed))
  assert update.compile_count == 1


def test_nonfinite_loss_is_skipped_and_counted(mesh, policy):
  _, state, update = _update_fn(mesh, policy)
  before = _copy(state["params"])
  state, metrics = update(state, _rollouts(loss_scale=np.nan))
  assert not np.isfinite(float(metrics["loss"]))
  assert int(metrics["optim/skipped_steps"]) == 1 and int(metrics["optim/consecutive_skips"]) == 1
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bit for bit
  state, metrics = update(state, _rollouts())
  assert int(metrics["optim/skipped_steps"]) == 1 and int(metrics["optim/consecutive_skips"]) == 0
  changed = [not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state["params"]))]
  assert any(changed)
  assert update.compile_count == 1  # the NaN is a value: same executable


@pytest.mark.parametrize("aggregation", [
    "grpo", pytest.param("dapo", marks=pytest.mark.slow)])  # one compilation each
def test_gradient_accumulation_equals_one_big_batch(mesh, policy, aggregation):
  """k = 2 minibatches of whole groups give the gradient (here: the SGD step) of one batch."""
  loss = grpo.LossConfig(aggregation=aggregation)
  r = _rollouts()
  results = []
  for k in (1, 2):
    _, state, update = _update_fn(mesh, policy, loss=loss, grad_accum_steps=k)
    results.append(update(state, r))
  (s1, m1), (s2, m2) = results
  for key in ("loss", "policy_loss"):
    np.testing.assert_allclose(float(m1[key]), float(m2[key]), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(float(m1["grad_norm"]), float(m2["grad_norm"]), rtol=1e-4)
  for a, b in zip(jax.tree.leaves(s1["params"]), jax.tree.leaves(s2["params"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # ~20 s: its own compilation (AdamW, mu = 2, a reference forward)
def test_several_updates_per_batch_use_old_logp_and_the_reference(mesh, policy):
  """mu = 2 with beta > 0 (AdamW): the second pass sees ratio != 1 against the sampler's
  log-probs, clipping, and a positive KL to the (unchanged) reference."""
  graphdef, state, update = _update_fn(
      mesh, policy, tx=("adamw", 1e-2), mu=2,
      loss=grpo.LossConfig(beta=0.1, epsilon_low=0.01, epsilon_high=0.01))
  ref = train_lib.split_trainable(_copy(state["params"]))[0]
  r = _rollouts(advantages=np.array([1, -1] * B, np.float32))
  old = grpo.token_log_probs(_logits(graphdef, state["params"], r), r.completions)
  r = r.replace(old_logp=np.asarray(old))
  with pytest.raises(ValueError, match="reference params are needed"):
    update(state, r)
  state, metrics = update(state, r, ref)
  assert float(metrics["kl"]) > 0
  assert float(metrics["ratio/max"]) > 1.0 > float(metrics["ratio/min"])
  assert float(metrics["clip_frac/region"]) > 0
  assert int(metrics["optim/skipped_steps"]) == 0


def _assert_same_update(a, b, rtol=1e-5):
  (sa, ma), (sb, mb) = a, b
  for key in ("loss", "policy_loss", "grad_norm"):
    np.testing.assert_allclose(float(ma[key]), float(mb[key]), rtol=rtol, atol=1e-7, err_msg=key)
  for x, y in zip(jax.tree.leaves(sa["params"]), jax.tree.leaves(sb["params"])):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=1e-7)


def test_mu_2_recomputes_the_old_logp_from_the_pre_update_policy(mesh, policy):
  """`old_logp="recompute"` (default): the sampler's log-probs are not used (here: zeros), and
  the update equals the one given the true pre-update log-probs as the sampler's."""
  graphdef, state, _ = _update_fn(mesh, policy, mu=2)
  adv = np.array([1, -1] * B, np.float32)
  r = _rollouts(advantages=adv)  # old_logp = zeros: a wrong sampler
  true_old = np.asarray(grpo.token_log_probs(_logits(graphdef, state["params"], r),
                                             r.completions))
  recomputed = _update_fn(mesh, policy, mu=2)[2]
  sampler = _update_fn(mesh, policy, mu=2, old_logp="sampler")[2]
  fresh = lambda: _update_fn(mesh, policy)[1]  # noqa: E731  (a new state: updates donate it)
  got = recomputed(fresh(), r)
  want = sampler(fresh(), r.replace(old_logp=true_old))
  _assert_same_update(got, want)
  wrong = sampler(fresh(), r)  # the zeros as old log-probs: a different update
  assert abs(float(wrong[1]["ratio/mean"]) - float(got[1]["ratio/mean"])) > 1e-3


def test_logp_gap_is_the_sampler_minus_training_logp_on_scored_tokens(mesh, policy):
  graphdef, state, update = _update_fn(mesh, policy)
  r = _rollouts()
  logp = np.asarray(grpo.token_log_probs(_logits(graphdef, state["params"], r), r.completions))
  shifted = np.where(r.loss_mask, logp + 0.5, -100.0)  # unscored tokens are not counted
  _, metrics = update(state, r.replace(old_logp=shifted))
  np.testing.assert_allclose(float(metrics["logp_gap/mean"]), 0.5, rtol=1e-4)
  np.testing.assert_allclose(float(metrics["logp_gap/max"]), 0.5, rtol=1e-4)


def test_cutting_padding_columns_changes_no_update(mesh, policy):
  """The trainer trains on completion columns up to the batch's longest completion only
  (`completion_buckets`): the update on the cut rollouts equals the full one."""
  r = _rollouts()
  longest = int(r.completion_mask.sum(1).max())
  pad = 3  # columns of padding in every row
  full = r.replace(**{f: np.pad(getattr(r, f), ((0, 0), (0, pad))) for f in (
      "completions", "completion_mask", "loss_mask", "old_logp")})
  assert full.completions.shape[1] == M + pad and longest <= M
  _, state, update = _update_fn(mesh, policy)
  cut = update(state, r)
  _, state, update = _update_fn(mesh, policy)
  _assert_same_update(update(state, full), cut)


def test_completion_buckets():
  from cesar_jax.rl import trainer  # pylint: disable=g-import-not-at-top
  assert trainer.completion_buckets(256, 4) == (64, 128, 192, 256)
  assert trainer.completion_buckets(300, 2) == (152, 300)
  assert trainer.completion_buckets(8, 1) == (8,)
  with pytest.raises(ValueError, match="completion_buckets=0"):
    trainer.completion_buckets(8, 0)
