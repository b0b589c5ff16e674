"""Mixed precision: float32 master weights, bfloat16 compute (the 7B recipes' dtypes).

An Adam step of ~1e-5 (CESAR's lr) is below half a bfloat16 ulp of any weight above ~0.004, so
updates applied to bfloat16 parameters round to nothing. With float32 masters cast once per
step to bfloat16 for the forward and backward, the same run learns about as much as float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cesar_jax import model_store
from cesar_jax import sft
from cesar_jax.models import preset
from cesar_jax.parallel import mesh as mesh_lib
from cesar_jax.rl import optim
from cesar_jax.rl import train_lib
from cesar_jax.rl import train_step

B, P, T, F, MELS, VOCAB = 4, 12, 12, 100, 16, 512
AUDIO_ID = VOCAB - 1
N_AUDIO = 25  # ((100 - 1) // 2 + 1 - 2) // 2 + 1
STEPS, LR = 20, 1e-5


def _smoke_model(dtype: str, param_dtype: str):
  """configs/smoke.py's model (tiny, one layer per side, 16 mels) with the given dtypes."""
  return preset("tiny", num_hidden_layers=1, encoder_layers=1, num_mel_bins=MELS,
                max_source_positions=F // 2, vocab_size=VOCAB, audio_token_id=AUDIO_ID,
                dtype=dtype, param_dtype=param_dtype)


def _batch():
  rng = np.random.default_rng(0)
  ids = rng.integers(1, AUDIO_ID, size=(B, P + N_AUDIO)).astype(np.int32)
  ids[:, 2:2 + N_AUDIO] = AUDIO_ID
  targets = rng.integers(1, AUDIO_ID, size=(B, T)).astype(np.int32)
  return {"prompt_ids": ids, "prompt_mask": np.ones(ids.shape, np.int32),
          "input_features": rng.normal(size=(B, MELS, F)).astype(np.float32),
          "feature_mask": np.ones((B, F), np.int32), "targets": targets,
          "target_mask": np.ones((B, T), np.int32)}


def _float32_loss(graphdef, params, batch):
  """The SFT loss of `params` evaluated in float32 (what the masters have learned)."""
  params = train_step.cast_floating(params, jnp.float32)
  model = nnx.merge(graphdef, params)
  logits = train_step.completion_logits(
      model, batch["prompt_ids"], batch["prompt_mask"], batch["input_features"],
      batch["feature_mask"], batch["targets"], batch["target_mask"], num_samples=1)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
  return -jnp.mean(picked)


def _loss_drop(dtype: str, param_dtype: str, mesh) -> float:
  """float32 loss before minus after STEPS AdamW steps at LR (an lr-0 twin does not move)."""
  cfg = _smoke_model(dtype, param_dtype)
  model = model_store.init_model(cfg, 0, mesh)
  graphdef, params = nnx.split(model)
  f32_graphdef, _ = nnx.split(model_store.init_model(cfg.replace(dtype="float32"), 0))
  batch = _batch()
  loss_fn = jax.jit(lambda p: _float32_loss(f32_graphdef, p, batch))
  before = float(loss_fn(params))
  section = optim.default_config()
  section.update(lr=LR, total_steps=STEPS, warmup_steps=0, end_lr_ratio=1.0)
  tx = optim.make_optimizer(section)
  state, shardings = train_lib.init_train_state(jax.tree.map(jnp.copy, params), tx, mesh)
  update = sft.SftUpdate(graphdef, tx, 1, mesh, shardings, compute_dtype=dtype)
  device_batch = train_lib.to_global(batch, mesh)
  for _ in range(STEPS):
    state, _ = update(state, device_batch)
  assert update.compile_count == 1
  assert all(x.dtype == jnp.dtype(param_dtype) for x in jax.tree.leaves(state["params"])
             if jnp.issubdtype(x.dtype, jnp.floating))
  return before - float(loss_fn(state["params"]))


@pytest.fixture(scope="module")
def drops():
  mesh = mesh_lib.make_mesh((1, 2, 1), devices=jax.devices()[:2])
  return {name: _loss_drop(dtype, param_dtype, mesh) for name, (dtype, param_dtype) in {
      "float32": ("float32", "float32"),
      "masters": ("bfloat16", "float32"),  # the 7B recipes
      "bf16_params": ("bfloat16", "bfloat16"),  # the bug: updates applied to bf16 weights
  }.items()}


def test_float32_masters_with_bfloat16_compute_learn_like_float32(drops):
  assert drops["float32"] > 1e-3
  assert abs(drops["masters"] - drops["float32"]) < 0.25 * drops["float32"], drops


def test_bfloat16_parameters_lose_the_updates(drops):
  """The failure the masters fix, so the test above could fail: bf16 weights barely move."""
  assert drops["bf16_params"] < 0.5 * drops["float32"], drops


def test_cast_params_copies_only_what_changes_dtype():
  """The sampler's compute view: float32 masters cast to bfloat16 on their shardings; leaves
  already bfloat16 (a LoRA run's frozen base) and integer leaves are the masters themselves,
  not copies (a 7B base copied every step would take its size again in HBM)."""
  mesh = mesh_lib.make_mesh((1, -1, 1))
  params = {"base": jnp.ones((4, 4), jnp.bfloat16), "adapter": jnp.full((4, 2), 0.5, jnp.float32),
            "step": jnp.zeros((), jnp.int32)}
  shardings = jax.tree.map(lambda _: mesh_lib.NamedSharding(mesh, mesh_lib.PartitionSpec()), params)
  params = jax.device_put(params, shardings)
  view = train_lib.cast_params(params, jnp.bfloat16, shardings)
  assert view["base"] is params["base"] and view["step"] is params["step"]
  assert view["adapter"].dtype == jnp.bfloat16 and view["adapter"].sharding == shardings["adapter"]
  np.testing.assert_array_equal(np.asarray(view["adapter"], np.float32), 0.5)
  assert train_lib.cast_params(view, jnp.bfloat16, shardings) is view  # nothing to cast
