"""LoRA in the training jobs: only the adapters train and are checkpointed, the base stays
frozen in the compute dtype, the KL reference is the base, and a LoRA run reads back."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytest.importorskip("qwix")

from cesar_jax import model_store  # noqa: E402
from cesar_jax import sft  # noqa: E402
from cesar_jax.parallel import mesh as mesh_lib  # noqa: E402
from cesar_jax.rl import grpo  # noqa: E402
from cesar_jax.rl import optim  # noqa: E402
from cesar_jax.rl import train_lib  # noqa: E402
from cesar_jax.rl import train_step  # noqa: E402

test_trainer = pytest.importorskip("tests.rl.test_trainer")  # its tiny model and rollouts


def _section(rank=4):
  from cesar_jax import lora  # pylint: disable=g-import-not-at-top
  section = lora.default_config()
  section.update(rank=rank, alpha=8.0)
  return section


def _adapted(mesh, dtype="float32"):
  cfg = test_trainer._model_config().replace(dtype=dtype)  # pylint: disable=protected-access
  model = model_store.init_model(cfg, 0, mesh)
  return model_store.add_adapters(model, _section(), mesh, seed=0, master=jnp.float32)


def _flat(state):
  return {tuple(p): np.asarray(v[...]) for p, v in nnx.to_flat_state(state)}


@pytest.fixture(scope="module")
def mesh():
  return mesh_lib.make_mesh((1, 2, 4))


def test_a_grpo_step_trains_only_the_adapters_and_the_reference_is_the_base(mesh):
  model = _adapted(mesh)
  graphdef, params = nnx.split(model)
  assert train_lib.has_adapters(params)
  trainable, frozen = train_lib.split_trainable(params)
  assert all("lora" in str(p[-1]) for p in _flat(trainable))
  section = optim.default_config()
  section.update(lr=1e-2, total_steps=10, end_lr_ratio=1.0)
  tx = optim.make_optimizer(section)
  state, shardings = train_lib.init_train_state(jax.tree.map(jnp.copy, params), tx, mesh)
  config = train_step.StepConfig(num_samples=test_trainer.G,
                                 loss=grpo.LossConfig(beta=0.1))
  update = train_step.GrpoUpdate(graphdef, tx, config, mesh, shardings)
  ref = jax.tree.map(jnp.copy, trainable)  # the fresh adapters: B = 0, i.e. the base model
  before = _flat(params)
  r = test_trainer._rollouts(advantages=np.array([1, -1] * test_trainer.B, np.float32))  # pylint: disable=protected-access
  state, metrics = update(state, r, ref)
  after = _flat(state["params"])
  changed = {p for p in before if not np.array_equal(before[p], after[p])}
  assert changed and all("lora" in str(p[-1]) for p in changed), changed
  assert any("kernel_lora_b" in str(p[-1]) for p in changed)  # B moved off zero
  np.testing.assert_allclose(float(metrics["kl"]), 0.0, atol=1e-6)  # step 0: policy == base
  state, metrics = update(state, r, ref)
  assert float(metrics["kl"]) > 0  # the adapted policy has left the base
  # The optimizer state holds the adapters' moments only.
  sizes = [x.size for x in jax.tree.leaves(state["opt_state"])]
  assert sum(sizes) < 3 * sum(v.size for v in _flat(trainable).values()) + 100


def test_the_base_is_frozen_in_the_compute_dtype_and_the_adapters_are_masters(mesh):
  model = _adapted(mesh, dtype="bfloat16")
  dtypes = {p: v.dtype for p, v in _flat(nnx.state(model, nnx.Param)).items()}
  assert {d for p, d in dtypes.items() if "lora" in str(p[-1])} == {np.dtype(jnp.float32)}
  assert {d for p, d in dtypes.items() if "lora" not in str(p[-1])} == {np.dtype(jnp.bfloat16)}


@pytest.fixture(scope="module")
def lora_sft_run(tmp_path_factory):
  """The smoke SFT job with rank-4 adapters, 2 steps, in this process."""
  from tests import test_configs  # pylint: disable=g-import-not-at-top
  config = test_configs._load("smoke", "job=sft,sft_steps=2")  # pylint: disable=protected-access
  with config.unlocked():
    config.lora.rank = 4
    config.lora.alpha = 8.0
    config.sft.batch_size = 8
    config.mesh.shape = (1, -1, 1)
  workdir = tmp_path_factory.mktemp("lora_sft")
  sft.run(config, str(workdir))
  return workdir


def test_a_lora_run_checkpoints_only_the_adapters_and_reads_back(lora_sft_run):
  meta = json.loads((lora_sft_run / "checkpoints" / "1" / "state" / "_METADATA").read_text())
  keys = [k for k in meta["tree_metadata"] if k.startswith("('params'")]
  assert keys and all("lora" in k for k in keys), keys[:5]
  model, config = model_store.restore_model(lora_sft_run)
  assert config.lora.rank == 4
  b = [v for p, v in _flat(nnx.state(model, nnx.LoRAParam)).items() if "lora_b" in str(p[-1])]
  assert b and any(np.abs(x).max() > 0 for x in b)  # trained adapters, not fresh ones
