"""Mesh, logical-axis rules, and a model sharded on the 8 forced CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

import hf_fixtures as F
from cesar_jax.checkpoints import hf
from cesar_jax.models import decoder as decoder_lib
from cesar_jax.parallel import mesh as mesh_lib

SPEC = F.HFSpec(num_key_value_heads=2)


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8
  return mesh_lib.make_mesh((2, 2, 2))


def test_make_mesh_shapes():
  m = mesh_lib.make_mesh((1, -1, 2))
  assert dict(m.shape) == {"data": 1, "fsdp": 4, "tensor": 2}
  assert all(t == jax.sharding.AxisType.Auto for t in m.axis_types)
  with pytest.raises(ValueError, match=r"needs 12 devices, 8 are given"):
    mesh_lib.make_mesh((3, 2, 2))


def test_logical_to_spec_hand_cases(mesh):
  spec = lambda names, shape: mesh_lib.logical_to_spec(names, shape, mesh)  # noqa: E731
  assert spec(("embed", "mlp"), (32, 48)) == P("fsdp", "tensor")
  assert spec(("embed", "mlp"), (3, 48)) == P(None, "tensor")      # 3 is not divisible by 2
  assert spec(("batch", None), (4, 5)) == P(("data", "fsdp"), None)
  assert spec(("batch", None), (2, 5)) == P("data", None)           # only 'data' divides
  assert spec(("batch",), (3,)) == P(None)
  assert spec(("heads", "heads"), (4, 4)) == P("tensor", None)      # an axis is used once
  assert spec(("norm",), (8,)) == P(None)
  with pytest.raises(ValueError, match="do not match shape"):
    spec(("embed",), (4, 4))


def test_sharded_model_gives_the_same_logits(mesh):
  model = F.random_model(F.jax_config(SPEC), seed=4)
  batch = F.make_batch(SPEC, feature_lengths=[SPEC.feature_frames, 26, 40, 33],
                       text_lengths=[4, 9, 2, 6], seed=5, total_length=26)
  ref = F.jax_forward(model, batch)
  sharded = mesh_lib.shard_model(F.random_model(F.jax_config(SPEC), seed=4), mesh)
  kernel = sharded.language_model.layers.mlp.up_proj.kernel.get_value()  # [L, E, F], stacked
  assert kernel.sharding.spec == P(None, "fsdp", "tensor")
  assert kernel.addressable_shards[0].data.shape == (
      SPEC.num_hidden_layers, SPEC.hidden_size // 2, SPEC.intermediate_size // 2)
  placed = {k: jax.device_put(v, mesh_lib.batch_sharding(mesh, v.shape)) for k, v in batch.items()}
  assert placed["input_ids"].sharding.spec == P(("data", "fsdp"), None)
  with jax.set_mesh(mesh):  # the models also constrain their activations then
    out = F.jax_forward(sharded, placed)
  m = batch["attention_mask"].astype(bool)
  np.testing.assert_allclose(out[m], ref[m], atol=1e-5)


def test_load_onto_mesh(tmp_path, mesh):
  model = F.random_model(F.jax_config(SPEC), seed=9)
  hf.save(model, tmp_path)
  loaded = hf.load(tmp_path, mesh=mesh)
  expected = mesh_lib.state_shardings(nnx.state(loaded), mesh)
  for (path, v), (_, s) in zip(nnx.to_flat_state(nnx.state(loaded)), nnx.to_flat_state(expected)):
    assert v.get_value().sharding.is_equivalent_to(s.get_value(), v.get_value().ndim), path
  q = loaded.language_model.layers.self_attn.q_proj.kernel.get_value()
  assert q.sharding.spec == P(None, "fsdp", "tensor")
  np.testing.assert_array_equal(np.asarray(q), np.asarray(model.language_model.layers.self_attn.q_proj.kernel.get_value()))


def test_sharded_cache_decode_steps(mesh):
  model = F.random_model(F.jax_config(SPEC), seed=2)
  cache = model.init_cache(4, 16)
  sh = mesh_lib.cache_shardings(cache, mesh)
  assert sh.k.spec == P(None, ("data", "fsdp"), "tensor", None, None)
  assert sh.mask.spec == P(("data", "fsdp"), None) and sh.index.spec == P()
  tokens = jnp.array([[3, 5, 7, 9], [11, 2, 4, 6]])  # [steps, B]

  def run(model, cache):
    step = nnx.jit(lambda m, t, c: m.decode_step(t, c))
    outs = []
    for t in tokens:
      logits, cache = step(model, t, cache)
      outs.append(np.asarray(logits))
    return np.stack(outs), cache

  ref, _ = run(model, cache)
  sharded = mesh_lib.shard_model(F.random_model(F.jax_config(SPEC), seed=2), mesh)
  with jax.set_mesh(mesh):
    out, placed = run(sharded, jax.device_put(cache, sh))
  assert placed.v.sharding.is_equivalent_to(sh.v, 5)  # the step keeps the cache layout
  np.testing.assert_allclose(out, ref, atol=1e-5)
  assert int(placed.index) == 2


def test_shared_prefix_cache_shards_head_dim_when_kv_heads_do_not_divide():
  """One kv head on 4-way tensor parallelism (as Qwen2.5-Omni-7B's 4 kv heads on 8): the cache
  shards its head_dim instead of sitting whole on every device; a group-shared cache's prefix
  too; decoding on that layout gives the unsharded logits."""
  spec = F.HFSpec(num_key_value_heads=1)
  mesh = mesh_lib.make_mesh((1, 2, 4))
  model = F.random_model(F.jax_config(spec), seed=4)
  ids = jnp.asarray(np.random.default_rng(1).integers(1, 90, size=(2, 6)))
  prompt_cache = nnx.jit(lambda m, x: m.prefill(x, jnp.ones_like(x), m.init_cache(2, 6))[1])(
      model, ids)
  cache = decoder_lib.share_prefix(prompt_cache, 2, 3)  # 2 prompts x G = 2 rows
  sh = mesh_lib.cache_shardings(cache, mesh)
  assert sh.k.spec == P(None, "fsdp", None, None, "tensor")
  assert sh.prefix.k.spec == P(None, "fsdp", None, None, "tensor")
  assert sh.prefix.mask.spec == P("fsdp", None)
  tokens = jnp.array([[3, 5, 7, 9], [11, 2, 4, 6]])
  step = nnx.jit(lambda m, t, c: m.decode_step(t, c))

  def run(model, cache):
    outs = []
    for t in tokens:
      logits, cache = step(model, t, cache)
      outs.append(np.asarray(logits))
    return np.stack(outs)

  ref = run(model, cache)
  sharded = mesh_lib.shard_model(F.random_model(F.jax_config(spec), seed=4), mesh)
  with jax.set_mesh(mesh):
    out = run(sharded, jax.device_put(cache, sh))
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_target_platform_follows_the_mesh_context(mesh):
  """Without a mesh: the default backend; under `jax.set_mesh`: the mesh's devices (a compile
  check for TPU traces under a mesh of abstract TPU devices on this CPU host)."""
  assert mesh_lib.target_platform() == jax.default_backend() == "cpu"
  with jax.set_mesh(mesh):
    assert mesh_lib.target_platform() == "cpu"
  from cesar_jax import platforms  # pylint: disable=g-import-not-at-top
  if not platforms.libtpu_installed():
    pytest.skip("the TPU half needs libtpu: pip install -e '.[tpu]'")
  from cesar_jax import compile_check  # pylint: disable=g-import-not-at-top
  tpu_mesh = compile_check.make_mesh((1, -1, 1), compile_check.topology_devices("v5e:2x2"))
  with jax.set_mesh(tpu_mesh):
    assert mesh_lib.target_platform() == "tpu"
