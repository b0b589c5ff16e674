"""HF safetensors <-> AudioLM: key table, save -> transformers round trip, sharded files, errors."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

import hf_fixtures as F
from cesar_jax.checkpoints import hf

SPEC = F.HFSpec(num_key_value_heads=2)
T = 29  # = the decoder test's prompt + steps: the same compiled forward is reused


def _batch():
  return F.make_batch(SPEC, feature_lengths=[SPEC.feature_frames, 30], text_lengths=[5, 8],
                      seed=11, total_length=T)


def _assert_same_logits(model, hf_model, batch):
  m = batch["attention_mask"].astype(bool)
  ours, ref = F.jax_forward(model, batch), F.hf_forward(hf_model, batch)
  np.testing.assert_allclose(ours[m], ref[m], atol=1e-4)
  assert np.abs(ref).max() > 0.5


def _flat(model):
  return {name: np.asarray(v) for name, v in hf.flat_parameters(model).items()}


def test_key_table_hand_examples():
  assert hf.hf_to_nnx("language_model.model.layers.13.self_attn.k_proj.bias") == (
      "language_model.layers.13.self_attn.k_proj.bias", "none")
  assert hf.hf_to_nnx("audio_tower.conv2.weight") == ("audio_tower.conv2.kernel", "conv")
  assert hf.hf_to_nnx("audio_tower.layers.0.self_attn.k_proj.bias") is None  # no such bias
  assert hf.hf_to_nnx("language_model.model.layers.0.self_attn.o_proj.bias") is None
  # transformers 5 in-memory names are accepted too.
  assert hf.hf_to_nnx("model.language_model.norm.weight") == ("language_model.norm.scale", "none")
  assert hf.hf_to_nnx("lm_head.weight") == ("language_model.lm_head.kernel", "linear")
  assert hf.nnx_to_hf("audio_tower.layers.1.final_layer_norm.scale") == (
      "audio_tower.layers.1.final_layer_norm.weight", "none")


def test_key_table_covers_every_parameter_both_ways():
  model = F.random_model(F.jax_config(SPEC))
  for name in _flat(model):
    hf_key, _ = hf.nnx_to_hf(name)
    assert hf.hf_to_nnx(hf_key)[0] == name


@pytest.mark.parametrize("tie", [False, True])
def test_save_then_transformers_from_pretrained(tmp_path, tie):
  from transformers import Qwen2AudioForConditionalGeneration
  model = F.random_model(F.jax_config(SPEC, tie_word_embeddings=tie), seed=5)
  hf.save(model, tmp_path)
  hf_model = Qwen2AudioForConditionalGeneration.from_pretrained(tmp_path).eval()
  _assert_same_logits(model, hf_model, _batch())
  # And back: exactly the same parameters, tied again.
  again = hf.load(tmp_path)
  assert again.config.text.tie_word_embeddings == tie
  a, b = _flat(model), _flat(again)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_sharded_save_writes_an_index(tmp_path):
  from transformers import Qwen2AudioForConditionalGeneration
  model = F.random_model(F.jax_config(SPEC), seed=6)
  hf.save(model, tmp_path, max_shard_bytes=20_000)
  index = json.loads((tmp_path / hf.INDEX_FILE).read_text())
  files = sorted(set(index["weight_map"].values()))
  assert len(files) > 2 and all((tmp_path / f).exists() for f in files)
  assert not (tmp_path / hf.SINGLE_FILE).exists()
  assert index["metadata"]["total_size"] == sum(v.nbytes for v in _flat(model).values())
  hf_model = Qwen2AudioForConditionalGeneration.from_pretrained(tmp_path).eval()
  _assert_same_logits(model, hf_model, _batch())
  reloaded = _flat(hf.load(tmp_path))
  for k, v in _flat(model).items():
    np.testing.assert_array_equal(reloaded[k], v, err_msg=k)


def test_bfloat16_load(tmp_path):
  model = F.random_model(F.jax_config(SPEC), seed=7)
  hf.save(model, tmp_path)
  low = hf.load(tmp_path, dtype=jnp.bfloat16)
  assert low.config.param_dtype == "bfloat16" and low.config.dtype == "bfloat16"
  assert low.language_model.layers.mlp.up_proj.kernel.get_value().dtype == jnp.bfloat16
  batch = _batch()
  ours, ref = F.jax_forward(low, batch), F.jax_forward(model, batch)
  assert ours.dtype == np.float32
  m = batch["attention_mask"].astype(bool)
  err = np.abs(ours[m] - ref[m]).max()
  assert 0 < err < 0.1 * np.abs(ref).max()  # bf16 rounding, nothing worse


@pytest.fixture()
def saved(tmp_path):
  model = F.random_model(F.jax_config(SPEC), seed=8)
  hf.save(model, tmp_path)
  return tmp_path, load_file(tmp_path / hf.SINGLE_FILE)


def _rewrite(path, tensors):
  save_file(tensors, path / hf.SINGLE_FILE, metadata={"format": "pt"})


def test_missing_key_is_named(saved):
  path, tensors = saved
  del tensors["language_model.model.layers.1.mlp.up_proj.weight"]
  _rewrite(path, tensors)
  with pytest.raises(ValueError, match=r"missing keys .*'language_model\.model\.layers\.1\.mlp\.up_proj\.weight'"):
    hf.load(path)


def test_unexpected_key_is_named(saved):
  path, tensors = saved
  tensors["audio_tower.layers.0.self_attn.k_proj.bias"] = np.zeros(SPEC.d_model, np.float32)
  _rewrite(path, tensors)
  with pytest.raises(ValueError, match=r"unexpected key 'audio_tower\.layers\.0\.self_attn\.k_proj\.bias' in .*model\.safetensors"):
    hf.load(path)


def test_unexpected_layer_is_named(saved):
  path, tensors = saved
  tensors["language_model.model.layers.7.input_layernorm.weight"] = np.ones(SPEC.hidden_size, np.float32)
  _rewrite(path, tensors)
  with pytest.raises(ValueError, match=r"unexpected key 'language_model\.model\.layers\.7\.input_layernorm\.weight'.*does not exist"):
    hf.load(path)


def test_misshaped_key_is_named(saved):
  path, tensors = saved
  key = "language_model.model.layers.0.self_attn.k_proj.weight"
  tensors[key] = np.zeros((SPEC.hidden_size, SPEC.hidden_size), np.float32)
  _rewrite(path, tensors)
  kv = SPEC.num_key_value_heads * SPEC.hidden_size // SPEC.num_attention_heads
  with pytest.raises(ValueError, match=rf"shape mismatch for key '{key}'.*stored \({SPEC.hidden_size}, {SPEC.hidden_size}\).*expects \({SPEC.hidden_size}, {kv}\)"):
    hf.load(path)


def test_missing_files_are_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    hf.load(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps(F.jax_config(SPEC).to_hf()))
  with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
    hf.load(tmp_path)


# Export dtype (issue 11): the checkpoint's own dtype, else the master (param) dtype.


def test_save_writes_the_dtype_the_checkpoint_came_in(tmp_path):
  src, out = tmp_path / "bf16", tmp_path / "out"
  model = F.random_model(F.jax_config(SPEC, dtype="bfloat16", param_dtype="bfloat16"), seed=9)
  hf.save(model, src)
  assert json.loads((src / "config.json").read_text())["dtype"] == "bfloat16"
  # float32 masters, bfloat16 compute, from a bfloat16 checkpoint: exported as bfloat16 again.
  masters = hf.load(src, dtype=jnp.float32, compute_dtype=jnp.bfloat16)
  assert (masters.config.param_dtype, masters.config.dtype) == ("float32", "bfloat16")
  assert masters.config.checkpoint_dtype == "bfloat16"
  assert masters.language_model.norm.scale.get_value().dtype == jnp.float32
  hf.save(masters, out)
  assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
  tensors = load_file(out / hf.SINGLE_FILE)
  assert {v.dtype for v in tensors.values()} == {np.dtype(jnp.bfloat16)}
  for k, v in load_file(src / hf.SINGLE_FILE).items():  # bf16 -> f32 -> bf16 is exact
    np.testing.assert_array_equal(tensors[k], v, err_msg=k)
  # An explicit dtype wins.
  hf.save(masters, out, dtype=jnp.float32)
  assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
  assert {v.dtype for v in load_file(out / hf.SINGLE_FILE).values()} == {np.dtype(np.float32)}


def test_save_of_a_trained_model_writes_its_master_dtype(tmp_path):
  # Not loaded from HF (e.g. restored from a run): float32 masters with bfloat16 compute are
  # written as float32, not rounded to the compute dtype.
  model = F.random_model(F.jax_config(SPEC, dtype="bfloat16", param_dtype="float32"), seed=9)
  assert model.config.export_dtype == "float32"
  hf.save(model, tmp_path)
  assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "float32"
  assert {v.dtype for v in load_file(tmp_path / hf.SINGLE_FILE).values()} == {np.dtype(np.float32)}


# Loading onto a mesh reads slices (issue 11): each device's part of each tensor, not the whole.


class _CountingHandle:
  """A safe_open handle that records every read: (key, shape read, full shape)."""

  def __init__(self, handle, reads):
    self._h, self._reads = handle, reads

  def keys(self):
    return self._h.keys()

  def get_tensor(self, key):
    x = self._h.get_tensor(key)
    self._reads.append((key, x.shape, x.shape))
    return x

  def get_slice(self, key):
    stored, reads = self._h.get_slice(key), self._reads

    class _Slice:
      def get_shape(self):
        return stored.get_shape()

      def __getitem__(self, index):
        x = stored[index]
        reads.append((key, x.shape, tuple(stored.get_shape())))
        return x
    return _Slice()


@pytest.mark.parametrize("spec", [SPEC, F.OmniSpec(hidden_size=48, d_model=32, encoder_ffn_dim=48)],
                         ids=["qwen2_audio", "qwen2_5_omni"])
def test_mesh_load_reads_only_the_slices_each_device_holds(tmp_path, monkeypatch, spec):
  import contextlib
  from cesar_jax.parallel import mesh as mesh_lib
  model = F.random_model(F.jax_config(spec), seed=10)
  hf.save(model, tmp_path)
  plain = _flat(hf.load(tmp_path))
  reads = []
  real_open = hf.safe_open

  @contextlib.contextmanager
  def counting_open(*args, **kwargs):
    with real_open(*args, **kwargs) as handle:
      yield _CountingHandle(handle, reads)

  monkeypatch.setattr(hf, "safe_open", counting_open)
  mesh = mesh_lib.make_mesh((1, 4, 2))
  sharded = hf.load(tmp_path, mesh=mesh)
  stacked = nnx.to_flat_state(nnx.state(sharded))
  for p, v in stacked:
    assert v.get_value().sharding == mesh_lib.variable_sharding(v, mesh), p
  state = hf.flat_parameters(sharded)  # per-layer names, as the key tables
  assert state.keys() == plain.keys()
  for k, v in state.items():
    np.testing.assert_array_equal(np.asarray(v), plain[k], err_msg=k)
  # No whole-tensor reads of a split tensor; a replicated one is read once, not per device; a
  # tensor split 8 ways is read as 8 slices of 1/8 each.
  split = _split_keys(stacked, spec)
  assert split and not [r for r in reads if r[1] == r[2] and r[0] in split], reads
  replicated = [r[0] for r in reads if r[0] not in split]
  assert len(replicated) == len(set(replicated)) == len(state) - len(split)
  embed_key = "model.embed_tokens.weight" if isinstance(spec, F.OmniSpec) else hf.EMBED
  embed_reads = [r for r in reads if r[0] == embed_key]
  assert len(embed_reads) == 8
  full = embed_reads[0][2]
  assert all(np.prod(shape) * 8 == np.prod(full) for _, shape, _ in embed_reads)


def _split_keys(stacked, spec):
  """HF keys of the parameters the mesh splits (some dimension sharded), layer by layer."""
  arch = "qwen2_5_omni" if isinstance(spec, F.OmniSpec) else "qwen2_audio"
  return {hf.nnx_to_hf(name, arch)[0] for p, v in stacked
          if any(s is not None for s in v.get_value().sharding.spec)
          for name, _ in hf._per_layer(p, v)}
