"""LoRA adapters on the decoder's projections, through qwix (the LoRA library Tunix uses).

    section = lora.default_config()              # config.lora: rank 0 = off
    section.rank, section.alpha = 16, 32.0
    model = lora.apply(model, section)           # adds adapters in place; returns the model
    trainable = nnx.state(model, lora.trainable_filter(section))   # only the adapters
    ...
    lora.export(model, "/out")                   # merged HF checkpoint + out/adapters/

How: qwix intercepts the `dot_general` of every matched `nnx.Linear` inside an intercepted
`__call__` and adds `x @ A @ B * alpha / rank` (A: he-uniform, B: zeros, so a fresh adapter
changes nothing, bit for bit). qwix intercepts only one method of the module it is given, so
the adapters are applied to the decoder layer (`DecoderLayer.__call__`), which every path
runs through: the full forward, prefill and the KV-cache decode steps of the sampler. The
layers are one stacked module (models/stack.py): qwix adapts each layer alone (`stack.layer`,
its own seed) and the adapted layers are stacked back (`stack.join`), so every layer carries
the same adapters, their arrays [L, ...] like the base weights'. The
adapters are `nnx.LoRAParam` variables (a subclass of `nnx.Param`): select them with
`trainable_filter`; the base weights stay `nnx.Param` and untouched by an optimizer built on
that filter. The reference policy of a KL term is the same model with the adapters zeroed
(`without_adapters`), not a second copy of the weights.

`config.lora.targets` is a regex matched (fullmatch) against module paths such as
`language_model/layers/self_attn/q_proj` (no layer index: the layers are stacked, so a
projection is adapted in every layer or in none); the default takes the seven projections of
the decoder layers (q, k, v, o, gate, up, down), as PEFT's "all-linear" minus the LM head. Dropout
is not supported: qwix draws LoRA dropout at every call, so the sampler and the reference
would be dropped out too.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from cesar_jax.models import decoder as decoder_lib
from cesar_jax.models import stack
from cesar_jax.models.audio_lm import TRAINABLE, AudioLM

DEFAULT_TARGETS = r"language_model/layers/(self_attn/(q|k|v|o)_proj|mlp/(gate|up|down)_proj)"
ADAPTERS_DIR = "adapters"
ADAPTERS_FILE = "adapters.safetensors"
ADAPTERS_CONFIG = "lora.json"
_SCALE_ATTR = "lora_scale"  # alpha / rank, set on the adapted decoder layer stack


def default_config() -> ml_collections.ConfigDict:
  """The `config.lora` section: rank 0 = off (the plain path)."""
  return ml_collections.ConfigDict(dict(
      rank=0,  # adapter rank r; 0 trains the full model
      alpha=16.0,  # the update is scaled by alpha / rank
      dropout=0.0,  # must be 0 (see the module docstring)
      targets=DEFAULT_TARGETS,  # regex over module paths
      weight_qtype="",  # QLoRA: quantize the frozen adapted kernels ("int8", "nf4", ...; "" = no)
  ))


def enabled(section: Any) -> bool:
  return section is not None and int(section["rank"]) > 0


def trainable_filter(section: Any):
  """What the optimizer trains: the adapters with LoRA, else the model's usual TRAINABLE set."""
  return nnx.LoRAParam if enabled(section) else TRAINABLE


def _check(section: Any) -> None:
  rank, alpha, dropout = int(section["rank"]), float(section["alpha"]), float(section["dropout"])
  if rank < 0:
    raise ValueError(f"config.lora.rank={rank}: must be >= 0 (0 = off)")
  if rank and alpha <= 0:
    raise ValueError(f"config.lora.alpha={alpha}: must be > 0")
  if dropout:
    raise NotImplementedError(
        f"config.lora.dropout={dropout}: qwix applies LoRA dropout at every call (the sampler "
        "and the reference policy included); use 0")


def _example_inputs(model: AudioLM):
  """A decoder layer's inputs for 2 tokens (qwix runs the layer once to create the adapters)."""
  cfg, dtype = model.config.text, model.config.compute_dtype
  x = jnp.zeros((1, 2, cfg.hidden_size), dtype)
  cos, sin = decoder_lib.rope_tables(jnp.arange(2)[None], cfg.kv_head_dim, cfg.rope_theta, dtype)
  return x, cos, sin, jnp.ones((1, 1, 2, 2), bool)


def apply(model: AudioLM, section: Any, *, seed: int = 0) -> AudioLM:
  """Adds fresh adapters to the matched projections of `model` (in place); returns it.

  Rank 0 returns `model` untouched. The adapters take the dtype of the weight they adapt.
  With `weight_qtype` (QLoRA) qwix replaces each adapted kernel by its quantized form
  (`kernel/array/{qvalue,scale}`, frozen) and computes with it, the KV-cache path included.
  """
  import qwix  # pylint: disable=g-import-not-at-top

  _check(section)
  if not enabled(section):
    return model
  rank, alpha, targets = int(section["rank"]), float(section["alpha"]), str(section["targets"])
  qtype = str(section.get("weight_qtype", "") or "") or None
  inputs = _example_inputs(model)
  layers = model.language_model.layers
  prefix = "language_model/layers/"
  paths = ["/".join(map(str, p)) for p, m in layers.iter_modules() if isinstance(m, nnx.Linear)]
  hits = [p for p in paths if re.fullmatch(targets, prefix + p)]
  if not hits:
    raise ValueError(f"config.lora.targets={targets!r} matches no projection; paths look like "
                     "'language_model/layers/self_attn/q_proj' (no layer index: the layers are "
                     "stacked, each projection is adapted in all of them)")
  provider = qwix.LoraProvider([qwix.LoraRule(
      module_path="|".join(re.escape(p) for p in hits), rank=rank, alpha=alpha,
      weight_qtype=qtype)])
  adapted = [qwix.apply_lora_to_model(stack.layer(layers, i), provider, *inputs,
                                      rngs=nnx.Rngs(seed + i))
             for i in range(stack.depth(layers))]
  model.language_model.layers = stack.join(adapted)
  setattr(model.language_model.layers, _SCALE_ATTR, alpha / rank)
  return model


def adapter_state(model: AudioLM) -> nnx.State:
  """The adapters alone (`nnx.LoRAParam`s)."""
  return nnx.state(model, nnx.LoRAParam)


def _flat(state: nnx.State) -> dict[tuple, Any]:
  return {tuple(p): v for p, v in nnx.to_flat_state(state)}


def _module(model: nnx.Module, path: tuple) -> nnx.Module:
  for key in path:
    model = model[key] if isinstance(key, int) else getattr(model, key)
  return model


def merged(model: AudioLM) -> AudioLM:
  """A plain AudioLM (no adapters) with `W + A @ B * alpha / rank` in each adapted kernel.

  Its logits equal the adapted model's (up to float rounding); `hf.save` writes it as a
  Hugging Face checkpoint. Sums in float32, then casts to the kernel's dtype. With QLoRA the
  base kernel is the dequantized one (what the adapted model computed with).
  """
  import qwix  # pylint: disable=g-import-not-at-top

  values = _flat(nnx.state(model, nnx.Param))
  scale = getattr(model.language_model.layers, _SCALE_ATTR, None)
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: AudioLM(model.config, rngs=nnx.Rngs(0))))
  out = {}
  for path, var in _flat(abstract).items():
    a, b = values.get(path[:-1] + ("kernel_lora_a",)), values.get(path[:-1] + ("kernel_lora_b",))
    if path in values:
      value = values[path]
      w = value[...]
    else:  # QLoRA: the kernel is a qwix QArray; merge onto its dequantized value
      w = qwix.dequantize(_module(model, path[:-1]).kernel.array).astype(var.value.dtype)
      value = var.replace(value=w)
    if path[-1] == "kernel" and a is not None:  # a: [L, in, r], b: [L, r, out]
      delta = jnp.asarray(a[...], jnp.float32) @ jnp.asarray(b[...], jnp.float32)
      value = var.replace(value=(w.astype(jnp.float32) + scale * delta.reshape(w.shape)
                                 ).astype(w.dtype))
    out[path] = value
  return nnx.merge(graphdef, nnx.from_flat_state(out))


def without_adapters(model: AudioLM) -> nnx.State:
  """The model's state with every adapter B zeroed: `nnx.merge(graphdef, it)` is the base
  model's function (the KL reference) at no copy of the base weights."""
  state = nnx.state(model)
  zeroed = {p: (v.replace(value=jnp.zeros_like(v[...])) if p[-1] == "kernel_lora_b" else v)
            for p, v in _flat(state).items()}
  return nnx.from_flat_state(zeroed)


def save_adapters(model: AudioLM, path: str | pathlib.Path, section: Any) -> pathlib.Path:
  """`path/adapters.safetensors` (dotted names) and `path/lora.json` (rank, alpha, targets)."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  tensors = {".".join(map(str, p)): np.asarray(jax.device_get(v[...]))
             for p, v in _flat(adapter_state(model)).items()}
  if not tensors:
    raise ValueError("save_adapters: the model has no adapters (lora.apply with rank > 0 first)")
  save_file(tensors, str(path / ADAPTERS_FILE))
  (path / ADAPTERS_CONFIG).write_text(json.dumps(
      {k: section.get(k, default_config()[k]) for k in default_config()}, indent=2) + "\n")
  return path


def load_adapters(model: AudioLM, path: str | pathlib.Path) -> AudioLM:
  """Applies the saved LoRA config to `model` (if not yet adapted) and loads the adapters."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(path)
  section = ml_collections.ConfigDict(json.loads((path / ADAPTERS_CONFIG).read_text()))
  if not _flat(adapter_state(model)):
    apply(model, section)
  tensors = load_file(str(path / ADAPTERS_FILE))
  current = _flat(adapter_state(model))
  names = {".".join(map(str, p)): p for p in current}
  if set(names) != set(tensors):
    raise ValueError(f"{path / ADAPTERS_FILE}: adapters {sorted(set(tensors) ^ set(names))[:4]} "
                     "do not match the model's")
  nnx.update(model, nnx.from_flat_state(
      {p: current[p].replace(value=jnp.asarray(tensors[n], current[p][...].dtype))
       for n, p in names.items()}))
  return model


def export(model: AudioLM, path: str | pathlib.Path, section: Any) -> pathlib.Path:
  """The merged Hugging Face checkpoint in `path` and the adapters alone in `path/adapters`."""
  from cesar_jax.checkpoints import hf  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(path)
  hf.save(merged(model), path)
  save_adapters(model, path / ADAPTERS_DIR, section)
  return path
