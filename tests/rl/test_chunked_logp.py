"""Chunked log-probs from hidden states (grpo.chunked_logp_entropy) and their use in the updates.

The chunked values and gradients equal the full-logits ones; the chunked gradient program holds
no [N, T, V] array; the GRPO update and the SFT step give the same losses, metrics and updated
parameters with the chunks on and off.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cesar_jax import model_store
from cesar_jax import sft
from cesar_jax.parallel import mesh as mesh_lib
from cesar_jax.rl import grpo
from cesar_jax.rl import optim
from cesar_jax.rl import train_lib
from cesar_jax.rl import train_step
import test_trainer as rl_fixtures  # the GRPO update fixtures (tests/rl)

N, T, E, V = 3, 13, 8, 50


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  hidden = jnp.asarray(rng.normal(size=(N, T, E)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(E, V)), jnp.float32)
  tokens = jnp.asarray(rng.integers(0, V, size=(N, T)), jnp.int32)
  weights = jnp.asarray(rng.normal(size=(N, T)), jnp.float32)
  return hidden, kernel, tokens, weights


def _loss(hidden, kernel, tokens, weights, chunk, temperature=0.7):
  out = grpo.chunked_logp_entropy(hidden, lambda h: h @ kernel, tokens, chunk=chunk,
                                  temperature=temperature, entropy=True, argmax_match=True)
  return jnp.sum(out["logp"] * weights), out


@pytest.mark.parametrize("chunk", [4, 5, 13])  # 4 and 5 pad T = 13; 13 is one chunk
def test_chunked_values_and_gradients_equal_the_full_logits(chunk):
  hidden, kernel, tokens, weights = _inputs()
  logits = hidden @ kernel
  np.testing.assert_allclose(
      _loss(hidden, kernel, tokens, weights, chunk)[1]["logp"],
      grpo.token_log_probs(logits, tokens, 0.7), rtol=1e-5, atol=1e-6)
  _, got = _loss(hidden, kernel, tokens, weights, chunk)
  np.testing.assert_allclose(got["entropy"], grpo.token_entropy(logits, 0.7), rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(got["argmax_match"], jnp.argmax(logits, -1) == tokens)
  grad = jax.grad(lambda h, k: _loss(h, k, tokens, weights, chunk)[0], argnums=(0, 1))
  want = jax.grad(lambda h, k: _loss(h, k, tokens, weights, 0)[0], argnums=(0, 1))
  for g, w in zip(grad(hidden, kernel), want(hidden, kernel)):
    assert float(jnp.max(jnp.abs(w))) > 0
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def _shapes(jaxpr) -> set[tuple[int, ...]]:
  """Shapes of every value a jaxpr (and its sub-jaxprs: map, checkpoint) produces."""
  out = set()
  for eqn in jaxpr.eqns:
    out.update(tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          out |= _shapes(inner)
  return out


def test_the_chunked_gradient_never_holds_full_logits():
  hidden, kernel, tokens, weights = _inputs()
  grad = lambda chunk: jax.make_jaxpr(jax.grad(  # noqa: E731
      lambda h, k: _loss(h, k, tokens, weights, chunk)[0], argnums=(0, 1)))(hidden, kernel)
  full = _shapes(grad(0).jaxpr)
  assert (N, T, V) in full  # the reference does hold them
  chunked = _shapes(grad(4).jaxpr)
  assert not any(len(s) >= 2 and s[-1] == V and np.prod(s) > N * 4 * V for s in chunked), (
      sorted(s for s in chunked if s and s[-1] == V))


def test_bad_tokens_shape_is_an_error_naming_both():
  hidden, kernel, tokens, _ = _inputs()
  with pytest.raises(ValueError, match=r"\(3, 12\).*\(3, 13, 8\)"):
    grpo.chunked_logp_entropy(hidden, lambda h: h @ kernel, tokens[:, :12], chunk=4)


@pytest.fixture(scope="module")
def mesh():
  return mesh_lib.make_mesh((1, 2, 4))  # 2 batch shards: the test batches of 4 split


def _grpo_step(mesh, chunk, beta):
  graphdef, params = nnx.split(rl_fixtures._model(mesh))
  tx = rl_fixtures._sgd(0.1)
  config = train_step.StepConfig(num_samples=rl_fixtures.G, grad_accum_steps=2, temperature=0.8,
                                 loss=grpo.LossConfig(beta=beta), logits_chunk=chunk)
  # Another policy as the reference, so that the KL term is not 0.
  ref = (train_lib.split_trainable(nnx.split(rl_fixtures._model(mesh, seed=1))[1])[0]
         if beta > 0 else None)
  state, shardings = train_lib.init_train_state(params, tx, mesh)
  update = train_step.GrpoUpdate(graphdef, tx, config, mesh, shardings)
  state, metrics = update(state, rl_fixtures._rollouts(seed=1), ref)
  return jax.device_get(state["params"]), jax.device_get(metrics)


def test_grpo_update_is_the_same_with_chunks_on_and_off(mesh):
  """M = 6 completion positions: chunks of 4 (padded), against the full logits."""
  params_full, metrics_full = _grpo_step(mesh, 0, beta=0.1)
  params_chunk, metrics_chunk = _grpo_step(mesh, 4, beta=0.1)
  for key in ("loss", "policy_loss", "kl", "entropy", "grad_norm"):
    assert abs(float(metrics_full[key])) > 0, key
    np.testing.assert_allclose(metrics_chunk[key], metrics_full[key], rtol=2e-5, atol=1e-7,
                               err_msg=key)
  for got, want in zip(jax.tree.leaves(params_chunk), jax.tree.leaves(params_full)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # the same function as the GRPO test above, in the SFT step
def test_sft_step_is_the_same_with_chunks_on_and_off(mesh):
  import test_sft as sft_fixtures  # pylint: disable=g-import-not-at-top
  model = model_store.init_model(sft_fixtures._model_config(), 0, mesh)
  graphdef, params = nnx.split(model)
  tx = optim.skip_nonfinite(optax.inject_hyperparams(optax.sgd)(learning_rate=0.5))
  out = []
  for chunk in (0, 2):
    state, shardings = train_lib.init_train_state(jax.tree.map(jnp.copy, params), tx, mesh)
    update = sft.SftUpdate(graphdef, tx, 2, mesh, shardings, logits_chunk=chunk)
    state, metrics = update(state, sft_fixtures._batch())
    out.append(jax.device_get((state["params"], metrics)))
  (p0, m0), (p1, m1) = out
  for key in ("loss", "token_accuracy", "grad_norm"):
    np.testing.assert_allclose(m1[key], m0[key], rtol=2e-5, err_msg=key)
  for got, want in zip(jax.tree.leaves(p1), jax.tree.leaves(p0)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
