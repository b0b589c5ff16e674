"""The sampler on 8 forced host devices with a (2, 2, 2) mesh gives the 1-device results."""

import jax
import numpy as np
import pytest
from flax import nnx

import sampler_fixtures as F
from cesar_jax.parallel import mesh as mesh_lib
from cesar_jax.sampling import sampler as sampler_lib


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (forced host) devices")
def test_mesh_2x2x2_matches_one_device():
  model = F.random_model()
  cfg = F.sampler_config()
  prompts = F.prompts([2, 7, 4, 5], feature_lengths=[32, 20, 26, 32], seed=4)
  kw = dict(num_samples=2, budgets=[1, 3, 0, -1], temperature=1.0, top_p=0.95,
            key=jax.random.key(11))

  single = sampler_lib.Sampler.for_model(model, cfg)
  one = single.generate(nnx.state(model), prompts, **kw)
  assert len(one.tokens.sharding.device_set) == 1

  mesh = mesh_lib.make_mesh((2, 2, 2))
  params = jax.device_put(nnx.state(model), mesh_lib.state_shardings(nnx.state(model), mesh))
  sharded = sampler_lib.Sampler.for_model(model, cfg, mesh=mesh)
  eight = sharded.generate(params, prompts, **kw)
  # 4 prompts x 2 samples = 8 rows, split over data x fsdp = 4 shards.
  assert eight.tokens.sharding.spec[0] == ("data", "fsdp")
  assert len(eight.tokens.sharding.device_set) == 8

  one, eight = one.to_numpy(), eight.to_numpy()
  for field in ("tokens", "lengths", "think_lengths", "budget_forced", "finish_reason", "forced",
                "loss_mask", "prompt_index"):
    np.testing.assert_array_equal(getattr(eight, field), getattr(one, field), err_msg=field)
  np.testing.assert_allclose(eight.logprobs, one.logprobs, atol=1e-5)
  assert len({tuple(r) for r in one.tokens}) == 8  # really sampled, not a constant path
  # Same again: no recompile on the mesh either.
  count = sharded.compile_count
  sharded.generate(params, prompts, **dict(kw, temperature=0.7, budgets=[2, 2, 2, 2]))
  assert sharded.compile_count == count


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (forced host) devices")
def test_the_notebook_api_pads_a_batch_the_mesh_does_not_split():
  """`sample` on 8 devices with 3 prompts: padded to 8 inside, the 3 prompts' rows come back,
  equal to the unsharded call (greedy), with per-prompt budgets padded alongside."""
  model, cfg = F.random_model(), F.sampler_config()
  mesh = mesh_lib.make_mesh((1, -1, 1))
  three = F.prompts([2, 7, 4], feature_lengths=[32, 20, 26], seed=4)
  kwargs = dict(num_samples=2, budgets=[0, 2, 5], config=cfg, greedy=True)
  got = sampler_lib.sample(model, three, mesh=mesh, **kwargs)
  want = sampler_lib.sample(model, three, **kwargs)
  assert got.tokens.shape[0] == 6
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_array_equal(got.think_lengths, want.think_lengths)
  with pytest.raises(ValueError, match="does not split over the mesh"):
    sampler_lib.Sampler.for_model(model, cfg, mesh).generate(nnx.state(model), three)
