"""LoRA through qwix: rank 0 is the plain model, only adapters train, the merged export equals
the adapted model (in JAX, after hf.save / hf.load, and in transformers)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

pytest.importorskip("qwix")

from cesar_jax import lora, model_store  # noqa: E402
from cesar_jax import tokenizers as tok_lib  # noqa: E402
from cesar_jax.checkpoints import hf  # noqa: E402
from cesar_jax.models.audio_lm import TRAINABLE  # noqa: E402

PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def base():
  """The plain tiny model; tests take `nnx.clone`s of it."""
  tok = tok_lib.Tokenizer.builtin()
  cfg = model_store.resolve_model_config({"preset": "tiny", "max_source_positions": 100}, tok)
  return model_store.init_model(cfg, seed=0)


@nnx.jit
def _logits(model, ids):
  return model(ids)


def _section(rank=4, alpha=8.0, **kw):
  section = lora.default_config()
  section.update(dict(rank=rank, alpha=alpha, **kw))
  return section


def _ids(vocab, shape=(2, 12), seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, vocab - 1, shape), jnp.int32)


def _randomize_adapters(model, seed=1):
  """Non-zero B (a fresh adapter is exactly zero), so the adapters change the logits."""
  flat = list(nnx.to_flat_state(lora.adapter_state(model)))
  keys = jax.random.split(jax.random.key(seed), len(flat))
  nnx.update(model, nnx.from_flat_state(
      {p: v.replace(value=0.2 * jax.random.normal(k, v[...].shape, v[...].dtype))
       for (p, v), k in zip(flat, keys)}))


@pytest.fixture(scope="module")
def adapted(base):
  """(plain model, the same weights with rank-4 adapters on every decoder projection)."""
  return base, lora.apply(nnx.clone(base), _section())


def test_rank_zero_is_the_plain_model_bit_for_bit(base):
  model = nnx.clone(base)
  ids = _ids(model.config.text.vocab_size)
  before = np.asarray(_logits(model, ids))
  same = lora.apply(model, lora.default_config())  # rank 0
  assert same is model and not list(nnx.to_flat_state(lora.adapter_state(same)))
  np.testing.assert_array_equal(np.asarray(_logits(same, ids)), before)
  assert lora.trainable_filter(lora.default_config()) is TRAINABLE


def test_adapters_sit_on_the_decoder_projections_and_start_at_zero(adapted):
  plain, model = adapted
  flat = list(nnx.to_flat_state(lora.adapter_state(model)))
  layers = plain.config.text.num_hidden_layers
  assert len(flat) == 2 * len(PROJECTIONS)  # one stacked A and B per projection
  assert all(p[0] == "language_model" and p[1] == "layers" and p[-2] in PROJECTIONS
             and p[-1] in ("kernel_lora_a", "kernel_lora_b") for p, _ in flat)
  shapes = {p[-2:]: v[...].shape for p, v in flat}
  e, r = plain.config.text.hidden_size, 4
  assert shapes["q_proj", "kernel_lora_a"] == (layers, e, r)  # [L, in, rank]
  assert shapes["down_proj", "kernel_lora_b"] == (layers, r, e)  # [L, rank, out]
  assert all(v.get_metadata()["out_sharding"][0] == "layers" for _, v in flat)
  # Each layer's A is drawn with its own seed.
  q_a = ("language_model", "layers", "self_attn", "q_proj", "kernel_lora_a")
  a = np.asarray(dict(flat)[q_a][...])
  assert not np.array_equal(a[0], a[1])
  ids = _ids(plain.config.text.vocab_size)
  # B = 0 at init: the adapted model computes exactly the plain one.
  np.testing.assert_array_equal(np.asarray(_logits(model, ids)), np.asarray(_logits(plain, ids)))


def test_targets_regex_selects_and_errors_name_it(base):
  model = lora.apply(nnx.clone(base),
                     _section(targets=r"language_model/layers/self_attn/(q|v)_proj"))
  paths = {p[:-1] for p, _ in nnx.to_flat_state(lora.adapter_state(model))}
  assert paths == {("language_model", "layers", "self_attn", "q_proj"),
                   ("language_model", "layers", "self_attn", "v_proj")}
  with pytest.raises(ValueError, match="'nothing' matches no projection"):
    lora.apply(nnx.clone(base), _section(targets="nothing"))
  # A layer index names no module path: the layers are stacked (adapted all alike).
  with pytest.raises(ValueError, match="no layer index"):
    lora.apply(nnx.clone(base), _section(targets=r"language_model/layers/1/self_attn/q_proj"))
  with pytest.raises(NotImplementedError, match="dropout=0.1"):
    lora.apply(nnx.clone(base), _section(dropout=0.1))


def test_the_kv_cache_path_runs_the_adapters(adapted):
  _, model = adapted
  model = nnx.clone(model)
  _randomize_adapters(model)
  ids = _ids(model.config.text.vocab_size)
  full = _logits(model, ids)
  logits, _ = nnx.jit(lambda m, ids: m.prefill(ids, jnp.ones_like(ids), m.init_cache(2, 16)))(
      model, ids)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(full[:, -1]), atol=1e-5)
  # ... and the adapters do change it: the reference state (B zeroed) gives the plain logits.
  graphdef, _ = nnx.split(model)
  base = nnx.merge(graphdef, lora.without_adapters(model))
  base_logits = _logits(base, ids)
  assert float(jnp.abs(full - base_logits).max()) > 1e-2
  np.testing.assert_allclose(np.asarray(base_logits), np.asarray(_logits(adapted[0], ids)),
                             atol=1e-6)


def test_a_training_step_changes_only_the_adapters(adapted):
  _, model = adapted
  model = nnx.clone(model)
  ids = _ids(model.config.text.vocab_size)
  graphdef, params = nnx.split(model)
  filt = lora.trainable_filter(_section())
  trainable, frozen = nnx.split_state(params, filt, ...)
  tx = optax.adam(1e-2)
  opt_state = tx.init(trainable)

  @jax.jit
  def step(trainable, frozen, opt_state):
    def loss_fn(trainable):
      logits = nnx.merge(graphdef, nnx.merge_state(trainable, frozen))(ids)
      return -jnp.mean(jax.nn.log_softmax(logits)[..., 0])
    loss, grads = jax.value_and_grad(loss_fn)(trainable)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss

  new_trainable, _, _ = step(trainable, frozen, opt_state)
  new = dict(nnx.to_flat_state(nnx.merge_state(new_trainable, frozen)))
  old = dict(nnx.to_flat_state(params))
  assert new.keys() == old.keys()
  changed = {p for p in old if not np.array_equal(np.asarray(old[p][...]), np.asarray(new[p][...]))}
  assert changed and all(p[-1] == "kernel_lora_b" for p in changed)  # A's grad is 0 while B = 0
  assert {p for p, _ in nnx.to_flat_state(trainable)} == {
      p for p in old if p[-1] in ("kernel_lora_a", "kernel_lora_b")}


def test_merged_export_equals_the_adapted_model(adapted, base, tmp_path):
  _, model = adapted
  model = nnx.clone(model)
  _randomize_adapters(model)
  ids = _ids(model.config.text.vocab_size)
  want = np.asarray(_logits(model, ids))
  merged = lora.merged(model)
  assert not list(nnx.to_flat_state(lora.adapter_state(merged)))
  np.testing.assert_allclose(np.asarray(_logits(merged, ids)), want, atol=1e-5)
  lora.export(model, tmp_path / "export", _section())
  loaded = hf.load(tmp_path / "export")
  np.testing.assert_allclose(np.asarray(_logits(loaded, ids)), want, atol=1e-5)
  # The adapters alone, loaded onto a fresh copy of the base weights.
  restored = lora.load_adapters(nnx.clone(base), tmp_path / "export" / lora.ADAPTERS_DIR)
  np.testing.assert_allclose(np.asarray(_logits(restored, ids)), want, atol=1e-6)


@pytest.mark.slow  # imports torch and transformers (~20 s on 2 busy cores)
def test_merged_export_in_transformers(adapted, tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  _, model = adapted
  model = nnx.clone(model)
  _randomize_adapters(model)
  ids = _ids(model.config.text.vocab_size)
  lora.export(model, tmp_path / "export", _section())
  hf_model = transformers.Qwen2AudioForConditionalGeneration.from_pretrained(
      tmp_path / "export", attn_implementation="eager").eval()
  with torch.no_grad():
    got = hf_model(input_ids=torch.tensor(np.asarray(ids), dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(got, np.asarray(_logits(model, ids)), atol=1e-4)


def test_qlora_int8_base_runs_every_path_and_merges(base, tmp_path):
  model = lora.apply(nnx.clone(base), _section(weight_qtype="int8"))
  flat = dict(nnx.to_flat_state(nnx.state(model)))
  q_proj = ("language_model", "layers", "self_attn", "q_proj")
  assert flat[q_proj + ("kernel", "array", "qvalue")][...].dtype == jnp.int8
  assert q_proj + ("kernel",) not in flat  # the float kernel is gone: the base is int8
  assert (("audio_tower", "layers", "self_attn", "q_proj", "kernel") in flat)  # not adapted
  _randomize_adapters(model)
  ids = _ids(model.config.text.vocab_size)
  full = _logits(model, ids)
  logits, _ = nnx.jit(lambda m, ids: m.prefill(ids, jnp.ones_like(ids), m.init_cache(2, 16)))(
      model, ids)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(full[:, -1]), atol=1e-5)
  trainable = {p for p, _ in nnx.to_flat_state(nnx.state(model, lora.trainable_filter(
      _section())))}
  assert trainable and all(p[-1] in ("kernel_lora_a", "kernel_lora_b") for p in trainable)
  # The merged (dequantized + adapter) export computes what the QLoRA model computes.
  lora.export(model, tmp_path / "export", _section(weight_qtype="int8"))
  np.testing.assert_allclose(np.asarray(_logits(hf.load(tmp_path / "export"), ids)),
                             np.asarray(full), atol=1e-4)


def test_a_bfloat16_base_with_float32_adapters_keeps_the_compute_dtype(base):
  """As the LoRA jobs build it (`model_store.add_adapters`): float32 adapter deltas would promote
  the residual stream to float32 (and break the layer scan's carry); the stream stays bf16."""
  cfg = base.config.replace(dtype="bfloat16")
  model = model_store.init_model(cfg, seed=0)
  model_store.add_adapters(model, _section(), None, seed=0, master=jnp.float32)
  assert model.language_model.layers.self_attn.q_proj.kernel_lora_a[...].dtype == jnp.float32
  assert model.language_model.layers.self_attn.q_proj.kernel[...].dtype == jnp.bfloat16
  _randomize_adapters(model)
  ids = _ids(cfg.text.vocab_size)
  hidden = nnx.jit(lambda m, ids: m.language_model(m.language_model.embed(ids)))(model, ids)
  assert hidden.dtype == jnp.bfloat16
  logits, _ = nnx.jit(lambda m, ids: m.prefill(ids, jnp.ones_like(ids), m.init_cache(2, 16)))(
      model, ids)
  full = _logits(model, ids)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(full[:, -1]), atol=0.1)
  assert bool(jnp.all(jnp.isfinite(full)))
