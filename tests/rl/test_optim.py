"""Optimizer: schedule values by hand; non-finite steps change nothing and are counted."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cesar_jax.rl import optim

SECTION = dict(lr=1.0, warmup_steps=10, total_steps=110, end_lr_ratio=0.1)


@pytest.mark.parametrize("step,expected", [
    (0, 0.0),  # warmup from 0
    (5, 0.5),  # 5 / 10 of the way
    (10, 1.0),  # peak
    # cosine over the remaining 100 steps: end + (peak - end) * (1 + cos(pi * t)) / 2
    (35, 0.1 + 0.9 * (1 + math.cos(math.pi * 0.25)) / 2),  # t = 1/4 -> 0.86820
    (60, 0.55),  # t = 1/2: 0.1 + 0.9 / 2
    (110, 0.1),  # end_lr = lr * end_lr_ratio
    (500, 0.1),  # stays there
])
def test_warmup_cosine_schedule(step, expected):
  np.testing.assert_allclose(optim.learning_rate_schedule(SECTION)(step), expected, rtol=1e-5,
                             atol=1e-7)


def test_unknown_or_inconsistent_keys_are_named():
  with pytest.raises(ValueError, match="config.optim.*learning_rate"):
    optim.make_optimizer({"learning_rate": 1e-5})
  with pytest.raises(ValueError, match="warmup_steps"):
    optim.make_optimizer({"warmup_steps": 20, "total_steps": 10})


def _model_and_optimizer(**section):
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  tx = optim.make_optimizer(dict(SECTION, **section))
  return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


@nnx.jit
def _train_step(model, optimizer, x, loss_scale):
  """One step on sum(model(x)^2) * loss_scale (NaN/inf scale -> non-finite loss and grads)."""
  loss, grads = nnx.value_and_grad(lambda m: jnp.sum(m(x) ** 2) * loss_scale)(model)
  optimizer.update(model, grads, loss=loss)
  return loss


def test_nonfinite_step_is_skipped_and_counted():
  model, optimizer = _model_and_optimizer(warmup_steps=0)
  x = jnp.ones((4, 3))
  _train_step(model, optimizer, x, 1.0)
  before = jax.tree.map(np.array, nnx.state((model, optimizer.opt_state)))
  m = optim.optimizer_metrics(optimizer.opt_state)
  assert int(m["optim/skipped_steps"]) == 0 and int(m["optim/consecutive_skips"]) == 0

  for scale in (jnp.nan, jnp.inf):
    _train_step(model, optimizer, x, scale)
  after = jax.tree.map(np.array, nnx.state((model, optimizer.opt_state)))
  # Parameters, Adam moments and the schedule count are unchanged, bit for bit.
  skip_keys = ("skipped", "consecutive")
  flat_before = {k: v for k, v in jax.tree_util.tree_flatten_with_path(before)[0]
                 if not any(getattr(p, "key", None) in skip_keys for p in k)}
  flat_after = dict(jax.tree_util.tree_flatten_with_path(after)[0])
  for path, value in flat_before.items():
    np.testing.assert_array_equal(flat_after[path], value, err_msg=jax.tree_util.keystr(path))
  m = optim.optimizer_metrics(optimizer.opt_state)
  assert int(m["optim/skipped_steps"]) == 2 and int(m["optim/consecutive_skips"]) == 2

  # A good step moves the parameters again and resets the run of skips, not the total.
  _train_step(model, optimizer, x, 1.0)
  assert not np.array_equal(model.kernel[...], before[0]["kernel"])
  m = optim.optimizer_metrics(nnx.split(optimizer)[1])  # also readable from the split state
  assert int(m["optim/skipped_steps"]) == 2 and int(m["optim/consecutive_skips"]) == 0


def test_nonfinite_loss_alone_skips():
  # Finite gradients but a NaN loss (e.g. a NaN in a metric-only term): still skipped.
  tx = optim.make_optimizer(SECTION)
  params = {"w": jnp.ones((2, 2))}
  state = tx.init(params)
  updates, state = tx.update({"w": jnp.ones((2, 2))}, state, params, loss=jnp.float32(jnp.nan))
  np.testing.assert_array_equal(updates["w"], 0.0)
  assert int(optim.optimizer_metrics(state)["optim/skipped_steps"]) == 1


def test_weight_decay_only_on_matrices_and_lr_reported():
  model, optimizer = _model_and_optimizer(warmup_steps=0, total_steps=100, weight_decay=0.1)
  model.bias[...] = jnp.ones(2)
  kernel, bias = np.array(model.kernel[...]), np.array(model.bias[...])
  zero_grads = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
  optimizer.update(model, zero_grads)
  # Zero gradient: Adam's step is 0; decoupled decay: w -= lr * wd * w with lr(0) = 1.
  np.testing.assert_allclose(model.kernel[...], kernel * (1 - 1.0 * 0.1), rtol=1e-6)
  np.testing.assert_array_equal(model.bias[...], bias)  # ndim < 2: no decay
  np.testing.assert_allclose(optim.optimizer_metrics(optimizer.opt_state)["optim/lr"], 1.0)


@pytest.mark.parametrize("max_grad_norm,second_update", [
    # b1 = 0, b2 = 0.5, eps = 0, lr = 1; gradients 10 then 1 on one scalar weight.
    # Clipped to norm 1: v1 = 0.5 * 1 = 0.5; v2 = 0.25 + 0.5 = 0.75, vhat = 0.75 / 0.75 = 1,
    #   update 2 = -1 / sqrt(1) = -1.
    (1.0, -1.0),
    # Not clipped: v1 = 0.5 * 100 = 50; v2 = 25 + 0.5 = 25.5, vhat = 25.5 / 0.75 = 34,
    #   update 2 = -1 / sqrt(34).
    (None, -1 / math.sqrt(34)),
])
def test_gradient_clipping_by_global_norm(max_grad_norm, second_update):
  tx = optim.make_optimizer(dict(lr=1.0, warmup_steps=0, total_steps=10, end_lr_ratio=1.0, b1=0.0,
                                 b2=0.5, eps=0.0, max_grad_norm=max_grad_norm))
  params = {"w": jnp.zeros((1,))}
  state = tx.init(params)
  first, state = tx.update({"w": jnp.array([10.0])}, state, params)
  second, _ = tx.update({"w": jnp.array([1.0])}, state, params)
  np.testing.assert_allclose(first["w"], [-1.0], rtol=1e-6)
  np.testing.assert_allclose(second["w"], [second_update], rtol=1e-6)


def test_bf16_params_match_plain_adamw():
  # inject_hyperparams would cast b2 = 0.999 to bf16 (= 1.0) and make every update NaN.
  params = {"w": jnp.full((2, 2), 0.5, jnp.bfloat16)}
  grads = {"w": jnp.array([[1.0, -2.0], [0.25, 3.0]], jnp.bfloat16)}
  tx = optim.make_optimizer(dict(lr=1e-3, warmup_steps=0, total_steps=10, end_lr_ratio=1.0,
                                 weight_decay=0.1, max_grad_norm=None))
  got, _ = tx.update(grads, tx.init(params), params)
  reference = optax.adamw(1e-3, weight_decay=0.1)
  want, _ = reference.update(grads, reference.init(params), params)
  assert got["w"].dtype == jnp.bfloat16
  np.testing.assert_allclose(np.float32(got["w"]), np.float32(want["w"]), rtol=1e-2)
  assert np.all(np.isfinite(np.float32(got["w"])))


def test_check_consecutive_skips():
  optim.check_consecutive_skips(9, {"max_consecutive_skips": 10}, step=5)
  with pytest.raises(FloatingPointError, match="step 7: 10 consecutive"):
    optim.check_consecutive_skips(10, {"max_consecutive_skips": 10}, step=7)
