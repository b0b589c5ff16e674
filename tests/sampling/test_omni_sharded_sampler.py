"""The sampler on the tiny Omni thinker: a (2, 2, 2) mesh gives the 1-device results.

Two sampler compilations (~15 s of CPU): `slow`, to keep `make test` short; the default set
has the Omni thinker on a mesh through hf.load's sharded placement (tests/checkpoints).
"""

import jax
import numpy as np
import pytest
from flax import nnx

import sampler_fixtures as F
from cesar_jax.models import audio_lm
from cesar_jax.models import config as model_config
from cesar_jax.parallel import mesh as mesh_lib
from cesar_jax.sampling import sampler as sampler_lib


@pytest.mark.slow
@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (forced host) devices")
def test_omni_mesh_2x2x2_matches_one_device():
  # Chunks of 2 * 6 frames: the 32 frames of a clip span 3 chunks, the last one partial.
  cfg = model_config.preset("tiny_omni", encoder_layers=1, num_mel_bins=16, n_window=6)
  model = audio_lm.AudioLM(cfg, rngs=nnx.Rngs(0))
  scfg = F.sampler_config(max_new_tokens=8)
  prompts = F.prompts([2, 7, 4, 5], feature_lengths=[32, 20, 13, 27], seed=4)
  kw = dict(num_samples=2, budgets=[1, 3, 0, -1], temperature=1.0, key=jax.random.key(11))
  one = sampler_lib.Sampler.for_model(model, scfg).generate(nnx.state(model), prompts, **kw)
  mesh = mesh_lib.make_mesh((2, 2, 2))
  params = jax.device_put(nnx.state(model), mesh_lib.state_shardings(nnx.state(model), mesh))
  eight = sampler_lib.Sampler.for_model(model, scfg, mesh=mesh).generate(params, prompts, **kw)
  assert len(eight.tokens.sharding.device_set) == 8
  one, eight = one.to_numpy(), eight.to_numpy()
  for field in ("tokens", "lengths", "think_lengths", "finish_reason", "loss_mask"):
    np.testing.assert_array_equal(getattr(eight, field), getattr(one, field), err_msg=field)
  np.testing.assert_allclose(eight.logprobs, one.logprobs, atol=1e-5)
  assert len({tuple(r) for r in one.tokens}) > 4  # really sampled, not a constant path
