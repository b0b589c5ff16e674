"""Checkpoint manager: exact round trips, latest-complete-step resume, SIGTERM guard."""

import os
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from cesar_jax.checkpoints import manager as manager_lib
from cesar_jax.rl import optim


def _state(seed: float):
  return {
      "params": {
          "w": (jnp.arange(12, dtype=jnp.float32).reshape(3, 4) / 7 + seed).astype(jnp.bfloat16),
          "b": jnp.array([seed, -1e-30, 3.3e38], jnp.float32),
      },
      "count": jnp.array(int(seed), jnp.int32),
  }


def _assert_tree_equal(got, expected):
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    assert g.dtype == e.dtype, (g.dtype, e.dtype)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(e))


@pytest.mark.parametrize("async_save", [True, False])
def test_round_trip_exact(tmp_path, async_save):
  rng = jax.random.fold_in(jax.random.key(42), 7)
  data_state = b'{"next_index": 17, "worker": 0}'
  config = ml_collections.ConfigDict({"model": {"dim": 8}, "lr": 1e-5, "name": "tiny"})
  with manager_lib.CheckpointManager(tmp_path, async_save=async_save) as ckpt:
    assert ckpt.restore(_state(0)) is None  # fresh start
    assert ckpt.save(5, _state(1.5), rng=rng, data_state=data_state, metadata=config)
  with manager_lib.CheckpointManager(tmp_path) as ckpt:
    restored = ckpt.restore(jax.tree.map(jnp.zeros_like, _state(0)))
  assert restored.step == 5
  _assert_tree_equal(restored.state, _state(1.5))
  assert restored.state["params"]["w"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(jax.random.key_data(restored.rng), jax.random.key_data(rng))
  assert jax.random.key_impl(restored.rng) == jax.random.key_impl(rng)
  # The restored key draws the same numbers.
  np.testing.assert_array_equal(jax.random.uniform(restored.rng, (3,)),
                                jax.random.uniform(rng, (3,)))
  assert restored.data_state == data_state
  assert restored.metadata == config.to_dict()


def test_data_state_kinds_and_raw_keys(tmp_path):
  raw_key = jax.random.PRNGKey(3)  # legacy uint32[2]
  rbg_key = jax.random.key(5, impl="rbg")
  with manager_lib.CheckpointManager(tmp_path, async_save=False) as ckpt:
    ckpt.save(1, _state(1), rng=raw_key, data_state={"epoch": 2, "pos": [1, 2]})
    ckpt.save(2, _state(2), rng=rbg_key, data_state=b"\xff\x00binary")
    ckpt.save(3, _state(3))  # no rng, no data state
    r1, r2, r3 = (ckpt.restore(_state(0), step=s) for s in (1, 2, 3))
  assert r1.data_state == {"epoch": 2, "pos": [1, 2]}
  np.testing.assert_array_equal(r1.rng, raw_key)
  assert r1.rng.dtype == jnp.uint32
  assert r2.data_state == b"\xff\x00binary"
  np.testing.assert_array_equal(jax.random.key_data(r2.rng), jax.random.key_data(rbg_key))
  assert r3.rng is None and r3.data_state is None and r3.metadata == {}


def test_latest_step_max_to_keep_and_interval(tmp_path):
  with manager_lib.CheckpointManager(tmp_path, max_to_keep=2, save_interval_steps=2) as ckpt:
    assert ckpt.save(1, _state(1))  # orbax always takes the first save of a run
    for step in (2, 3, 4, 5, 6):
      assert ckpt.save(step, _state(step)) == (step % 2 == 0)  # then only on the interval
    assert ckpt.save(7, _state(7), force=True)  # e.g. the final or preemption save
    assert not ckpt.save(7, _state(7), force=True)  # already saved: a no-op, not an error
  # A restart with the same command: a new manager on the same workdir.
  with manager_lib.CheckpointManager(tmp_path, max_to_keep=2) as ckpt:
    assert ckpt.all_steps() == [6, 7]
    restored = ckpt.restore(_state(0))
    assert restored.step == 7
    _assert_tree_equal(restored.state, _state(7))
    with pytest.raises(FileNotFoundError, match="step 2.*\\[6, 7\\]"):
      ckpt.restore(_state(0), step=2)


def test_incomplete_step_is_never_restored(tmp_path):
  with manager_lib.CheckpointManager(tmp_path, async_save=False) as ckpt:
    ckpt.save(1, _state(1))
    ckpt.save(2, _state(2))
  # A save of step 3 killed half way: orbax's temporary directory, never renamed to "3".
  partial = tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp-1712345678901234"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "garbage").write_bytes(b"half written")
  with manager_lib.CheckpointManager(tmp_path) as ckpt:
    assert ckpt.latest_step() == 2
    restored = ckpt.restore(_state(0))
  assert restored.step == 2
  _assert_tree_equal(restored.state, _state(2))


def test_nnx_model_and_optimizer_round_trip_with_sharding(tmp_path):
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  model = nnx.Linear(8, 4, rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16)
  optimizer = nnx.Optimizer(model, optim.make_optimizer({"lr": 1e-3}), wrt=nnx.Param)
  grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
  optimizer.update(model, grads)
  _, state = nnx.split((model, optimizer))
  with manager_lib.CheckpointManager(tmp_path) as ckpt:
    ckpt.save(1, state)
  # Restore onto a template whose kernel is sharded over the 8 devices.
  fresh = nnx.Linear(8, 4, rngs=nnx.Rngs(1), param_dtype=jnp.bfloat16)
  graphdef, template = nnx.split((fresh, nnx.Optimizer(fresh, optim.make_optimizer({"lr": 1e-3}),
                                                       wrt=nnx.Param)))
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(
          mesh, P("data") if x.ndim == 2 else P())), template)
  with manager_lib.CheckpointManager(tmp_path) as ckpt:
    restored = ckpt.restore(abstract)
  _assert_tree_equal(restored.state, state)
  new_model, new_opt = nnx.merge(graphdef, restored.state)
  assert new_model.kernel[...].sharding.spec == P("data")
  np.testing.assert_array_equal(new_model.kernel[...], model.kernel[...])
  assert int(optim.optimizer_metrics(new_opt.opt_state)["optim/skipped_steps"]) == 0


def test_sigterm_sets_the_flag_and_handlers_come_back():
  before = signal.getsignal(signal.SIGTERM)
  with manager_lib.PreemptionGuard() as guard:
    assert not guard.requested and not guard.should_stop()
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.monotonic() + 5
    while not guard.requested and time.monotonic() < deadline:
      time.sleep(0.01)
    assert guard.requested and guard.should_stop()
    assert guard.received == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is before


def test_preempted_loop_saves_and_resumes(tmp_path):
  """A toy loop: SIGTERM at step 3 -> forced save of step 3; the rerun resumes at 4."""

  def run(total_steps: int, preempt_at: int | None) -> list[int]:
    seen = []
    with manager_lib.CheckpointManager(tmp_path, save_interval_steps=100) as ckpt, \
        manager_lib.PreemptionGuard() as guard:
      restored = ckpt.restore({"x": jnp.zeros(())})
      x, start = (restored.state["x"], restored.step + 1) if restored else (jnp.zeros(()), 0)
      for step in range(start, total_steps):
        x = x + step
        seen.append(step)
        if step == preempt_at:
          os.kill(os.getpid(), signal.SIGTERM)
          time.sleep(0.05)
        stop = guard.should_stop()
        ckpt.save(step, {"x": x}, force=stop or step == total_steps - 1)
        if stop:
          break
    return seen, float(x)

  seen, _ = run(6, preempt_at=3)
  assert seen == [0, 1, 2, 3]
  seen, x = run(6, preempt_at=None)
  assert seen == [4, 5]
  assert x == sum(range(6))  # the same as an uninterrupted run
