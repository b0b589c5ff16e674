"""SFT targets and loss (completion tokens only), and reading a run's model back (model_store)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from cesar_jax import model_store
from cesar_jax import sft
from cesar_jax.checkpoints import manager as manager_lib
from cesar_jax.models import preset
from cesar_jax.parallel import mesh as mesh_lib
from cesar_jax.rl import optim
from cesar_jax.rl import train_lib
from cesar_jax.tokenizers import Tokenizer

B, P, T, F, MELS = 4, 8, 5, 16, 8


def _model_config(vocab=64, audio_id=63):
  return preset("tiny", num_hidden_layers=1, encoder_layers=1, num_mel_bins=MELS, d_model=16,
                encoder_attention_heads=2, encoder_ffn_dim=32, max_source_positions=F // 2,
                hidden_size=16, intermediate_size=32, num_attention_heads=2,
                num_key_value_heads=1, vocab_size=vocab, audio_token_id=audio_id)


def test_encode_targets_appends_eos_pads_and_truncates():
  tok = Tokenizer.builtin()
  traces = ["<think>a tone</think><answer>higher</answer>", "<answer>2</answer>"]
  targets, mask, truncated = sft.encode_targets(traces, tok, max_tokens=6)
  first = tok.encode(traces[0]) + [tok.eos_id]
  second = tok.encode(traces[1]) + [tok.eos_id]
  assert first[0] == tok.think_open_id and len(first) > 6 and len(second) == 4
  np.testing.assert_array_equal(targets[0], first[:6])
  np.testing.assert_array_equal(targets[1], second + [tok.pad_id] * 2)
  np.testing.assert_array_equal(mask, [[1] * 6, [1] * 4 + [0] * 2])
  np.testing.assert_array_equal(truncated, [True, False])


@pytest.fixture(scope="module")
def mesh():
  return mesh_lib.make_mesh((1, 2, 4))  # 2 batch shards: the batch of 4 and its minibatches split


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  audio_id = 63
  ids = rng.integers(1, audio_id, size=(B, P)).astype(np.int32)
  ids[:, 2:6] = audio_id  # 4 audio tokens for 16 frames
  mask = np.ones((B, P), np.int32)
  ids[0, :2], mask[0, :2] = 0, 0  # left padding
  lengths = np.array([5, 2, 4, 1])
  target_mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
  targets = np.where(target_mask > 0, rng.integers(1, audio_id, size=(B, T)), 0).astype(np.int32)
  return {"prompt_ids": ids, "prompt_mask": mask,
          "input_features": rng.normal(size=(B, MELS, F)).astype(np.float32),
          "feature_mask": np.ones((B, F), np.int32), "targets": targets,
          "target_mask": target_mask}


def test_sft_loss_is_cross_entropy_on_target_tokens_only(mesh):
  """The step's loss equals a hand computation from the full forward: the mean over target
  tokens of -log p(target), prompt positions and padding unscored; an SGD step lowers it."""
  model = model_store.init_model(_model_config(), 0, mesh)
  graphdef, params = nnx.split(model)
  batch = _batch()
  ids = np.concatenate([batch["prompt_ids"], batch["targets"]], 1)
  attn = np.concatenate([batch["prompt_mask"], batch["target_mask"]], 1)
  logits = jax.jit(lambda p: nnx.merge(graphdef, p)(
      ids, batch["input_features"], batch["feature_mask"], attn))(params)
  logp = np.asarray(jax.nn.log_softmax(logits[:, P - 1:-1], axis=-1))
  picked = np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
  valid = batch["target_mask"] > 0
  want = -picked[valid].mean()

  tx = optim.skip_nonfinite(optax.inject_hyperparams(optax.sgd)(learning_rate=0.5))
  state, shardings = train_lib.init_train_state(jax.tree.map(jnp.copy, params), tx, mesh)
  update = sft.SftUpdate(graphdef, tx, 2, mesh, shardings)  # two minibatches of 2
  state, metrics = update(state, batch)
  np.testing.assert_allclose(float(metrics["loss"]), want, rtol=1e-5)
  correct = np.argmax(np.asarray(logits)[:, P - 1:-1], -1) == batch["targets"]
  np.testing.assert_allclose(float(metrics["token_accuracy"]), correct[valid].mean(), rtol=1e-6)
  _, metrics = update(state, batch)
  assert float(metrics["loss"]) < want
  assert update.compile_count == 1


def _write_run(workdir, mesh, step=7):
  """A run workdir as the jobs leave it: run files + one checkpoint of {params, opt_state}."""
  tok = Tokenizer.builtin()
  cfg = _model_config(vocab=tok.vocab_size, audio_id=tok.audio_id)
  model = model_store.init_model(cfg, 3, mesh)
  _, params = nnx.split(model)
  tx = optim.make_optimizer(optim.default_config())
  state, _ = train_lib.init_train_state(params, tx, mesh)
  model_store.write_run_files(workdir, cfg, tok)
  (workdir / "config.json").write_text(ml_collections.ConfigDict(
      {"job": "sft", "model": {"preset": "tiny"}}).to_json())
  with manager_lib.CheckpointManager(workdir) as ckpt:
    ckpt.save(step, state, metadata={"job": "sft-metadata"})
  return cfg, params


def test_restore_model_and_load_policy_read_a_run_workdir(tmp_path, mesh):
  cfg, params = _write_run(tmp_path, mesh)
  assert model_store.is_run_workdir(tmp_path) and not model_store.is_hf_dir(tmp_path)
  model, config = model_store.restore_model(tmp_path, mesh=mesh)
  assert model.config == cfg and config.job == "sft"
  _, restored = nnx.split(model)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  tok = model_store.load_tokenizer(str(tmp_path))  # the workdir's tokenizer.json
  assert tok.vocab_size == Tokenizer.builtin().vocab_size
  policy = model_store.load_policy(str(tmp_path), {"preset": "small"}, mesh)  # section ignored
  assert policy.config == cfg
  (tmp_path / "config.json").unlink()  # then the config saved with the checkpoint is used
  assert model_store.restore_model(tmp_path)[1].job == "sft-metadata"


def test_a_checkpoint_of_another_parameter_tree_is_an_error_naming_what_is_missing(tmp_path, mesh):
  """E.g. one written before the layers were stacked (layers/0/..., layers/1/...): a partial
  restore would leave the stacked parameters unread; restoring refuses instead."""
  cfg = model_store.resolve_model_config({"preset": "tiny"}, Tokenizer.builtin())
  model = model_store.init_model(cfg, 3, mesh)
  flat = {}
  for path, v in nnx.to_flat_state(nnx.state(model)):
    value = v.get_value()
    if path[1] == "layers":  # the old layout: one subtree per layer index
      for i in range(value.shape[0]):
        flat[path[:2] + (i,) + path[2:]] = v.replace(value=value[i])
    else:
      flat[path] = v
  old = {"params": nnx.from_flat_state(flat)}
  model_store.write_run_files(tmp_path, cfg, Tokenizer.builtin())
  with manager_lib.CheckpointManager(tmp_path) as ckpt:
    ckpt.save(1, old, metadata={"job": "sft"})
  with pytest.raises(ValueError, match=r"holds no .*layers.*parameters are missing.*stacked"):
    model_store.restore_model(tmp_path)


def test_load_policy_random_init_follows_the_tokenizer_and_errors_name_the_path(tmp_path, mesh):
  tok = Tokenizer.builtin()
  model = model_store.load_policy("", {"preset": "tiny", "num_hidden_layers": 1}, mesh)
  assert model.config.text.vocab_size == tok.vocab_size
  assert model.config.audio_token_id == tok.audio_id
  with pytest.raises(FileNotFoundError, match="nowhere"):
    model_store.load_policy(str(tmp_path / "nowhere"), {"preset": "tiny"}, mesh)
  with pytest.raises(ValueError, match="audio_token_id 5 is not the tokenizer"):
    model_store.load_policy("", {"preset": "tiny", "audio_token_id": 5}, mesh)
  with pytest.raises(FileNotFoundError, match="holds no finalized checkpoint"):
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    model_store.write_run_files(tmp_path / "empty", model.config, tok)
    model_store.restore_model(tmp_path / "empty")
