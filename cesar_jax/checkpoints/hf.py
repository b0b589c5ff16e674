"""Hugging Face Qwen2-Audio checkpoints (config.json + safetensors) <-> `AudioLM`.

  model = hf.load("/ckpt/Qwen2-Audio-7B-Instruct", dtype=jnp.bfloat16, mesh=mesh)
  hf.save(model, "/tmp/out")        # transformers `from_pretrained` reads it back

One table, `KEY_MAP`, pairs each HF key template with the NNX parameter path and a layout
transform; `{name}` fields are regex groups (layer index, projection name) shared by both sides,
so the table maps in both directions. Transforms: "linear" (torch [out, in] <-> flax [in, out]),
"conv" (torch [out, in, k] <-> flax [k, in, out]), "none".

Loading streams: tensor by tensor (safetensors `safe_open`), each transformed, cast and placed
(on its sharding when a mesh is given, built from abstract shapes so no full model is ever
materialised first), so a 7B never needs two full copies in host memory. Keys written by
transformers 5 in its in-memory layout (`model.audio_tower.*`, `lm_head.weight`, ...) are
accepted too. A missing, unexpected or mis-shaped key is a ValueError naming it (and its file).

Tying: transformers' Qwen2-Audio never ties its LM head (it always has `lm_head.weight`). A
config asking for tied embeddings is loaded tied only when the stored head equals the
embedding (or is absent); otherwise it loads untied, as transformers would compute it.
`save` of a tied model writes the embedding as `lm_head.weight` too.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from cesar_jax.models.audio_lm import AudioLM
from cesar_jax.models.config import AudioLMConfig
from cesar_jax.parallel import mesh as mesh_lib

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
LM_HEAD = "language_model.lm_head.weight"
EMBED = "language_model.model.embed_tokens.weight"

_GROUPS = {
    "i": r"\d+",
    "conv": "conv1|conv2",
    "eattn": "q_proj|k_proj|v_proj|out_proj",
    "ebias": "q_proj|v_proj|out_proj",          # the encoder's k_proj has no bias
    "eln": "self_attn_layer_norm|final_layer_norm",
    "fc": "fc1|fc2",
    "dattn": "q_proj|k_proj|v_proj|o_proj",
    "dbias": "q_proj|k_proj|v_proj",            # the decoder's o_proj has no bias
    "mlp": "gate_proj|up_proj|down_proj",
    "rms": "input_layernorm|post_attention_layernorm",
}

# (HF key, NNX path, transform).
_E = "audio_tower.layers.{i}"
_D = "language_model.model.layers.{i}"
_N = "language_model.layers.{i}"
KEY_MAP: tuple[tuple[str, str, str], ...] = (
    ("audio_tower.{conv}.weight", "audio_tower.{conv}.kernel", "conv"),
    ("audio_tower.{conv}.bias", "audio_tower.{conv}.bias", "none"),
    ("audio_tower.embed_positions.weight", "audio_tower.embed_positions", "none"),
    (_E + ".self_attn.{eattn}.weight", _E + ".self_attn.{eattn}.kernel", "linear"),
    (_E + ".self_attn.{ebias}.bias", _E + ".self_attn.{ebias}.bias", "none"),
    (_E + ".{eln}.weight", _E + ".{eln}.scale", "none"),
    (_E + ".{eln}.bias", _E + ".{eln}.bias", "none"),
    (_E + ".{fc}.weight", _E + ".{fc}.kernel", "linear"),
    (_E + ".{fc}.bias", _E + ".{fc}.bias", "none"),
    ("audio_tower.layer_norm.weight", "audio_tower.layer_norm.scale", "none"),
    ("audio_tower.layer_norm.bias", "audio_tower.layer_norm.bias", "none"),
    ("multi_modal_projector.linear.weight", "multi_modal_projector.linear.kernel", "linear"),
    ("multi_modal_projector.linear.bias", "multi_modal_projector.linear.bias", "none"),
    (EMBED, "language_model.embed_tokens.embedding", "none"),
    (_D + ".self_attn.{dattn}.weight", _N + ".self_attn.{dattn}.kernel", "linear"),
    (_D + ".self_attn.{dbias}.bias", _N + ".self_attn.{dbias}.bias", "none"),
    (_D + ".mlp.{mlp}.weight", _N + ".mlp.{mlp}.kernel", "linear"),
    (_D + ".{rms}.weight", _N + ".{rms}.scale", "none"),
    ("language_model.model.norm.weight", "language_model.norm.scale", "none"),
    (LM_HEAD, "language_model.lm_head.kernel", "linear"),
)

# transformers 5 in-memory names -> the saved (legacy) names used in KEY_MAP.
_PREFIX_ALIASES = (
    ("model.audio_tower.", "audio_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)

# Layout transforms, HF -> NNX (both are their own inverse).
_TRANSFORMS = {
    "none": lambda x: x,
    "linear": lambda x: x.T,
    "conv": lambda x: x.transpose(2, 1, 0),
}


def _compile(template: str) -> re.Pattern:
  parts = re.split(r"\{(\w+)\}", template)
  regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{_GROUPS[p]})"
                  for i, p in enumerate(parts))
  return re.compile(regex + r"\Z")


_FORWARD = tuple((_compile(hf), nnx_t, t) for hf, nnx_t, t in KEY_MAP)
_BACKWARD = tuple((_compile(nnx_t), hf, t) for hf, nnx_t, t in KEY_MAP)


def normalize_key(key: str) -> str:
  """Map transformers-5 in-memory key names onto the saved layout used by KEY_MAP."""
  for old, new in _PREFIX_ALIASES:
    if key.startswith(old):
      return new + key[len(old):]
  return key


def hf_to_nnx(key: str) -> tuple[str, str] | None:
  """HF key -> (NNX dotted path, transform name), or None when no rule matches."""
  key = normalize_key(key)
  for regex, template, transform in _FORWARD:
    if m := regex.match(key):
      return template.format(**m.groupdict()), transform
  return None


def nnx_to_hf(path: str) -> tuple[str, str] | None:
  """NNX dotted path -> (HF key, transform name), or None when no rule matches."""
  for regex, template, transform in _BACKWARD:
    if m := regex.match(path):
      return template.format(**m.groupdict()), transform
  return None


def _dotted(path: tuple) -> str:
  return ".".join(str(p) for p in path)


def checkpoint_files(path: pathlib.Path) -> list[pathlib.Path]:
  """The safetensors files of a checkpoint directory (index first, then single file, then glob)."""
  index = path / INDEX_FILE
  if index.exists():
    weight_map = json.loads(index.read_text())["weight_map"]
    files = [path / f for f in sorted(set(weight_map.values()))]
  elif (path / SINGLE_FILE).exists():
    files = [path / SINGLE_FILE]
  else:
    files = sorted(path.glob("*.safetensors"))
  if not files:
    raise FileNotFoundError(f"no *.safetensors files in {path}")
  for f in files:
    if not f.exists():
      raise FileNotFoundError(f"{f} is listed in {index} but does not exist")
  return files


def _iter_tensors(files: list[pathlib.Path]) -> Iterator[tuple[str, pathlib.Path, Any]]:
  """(normalized key, file, handle) for every tensor, one open file at a time."""
  for file in files:
    with safe_open(file, framework="numpy") as handle:
      for key in handle.keys():
        yield key, file, handle


def _decide_tie(cfg: AudioLMConfig, files: list[pathlib.Path]) -> bool:
  """Tied only if the config says so and the stored head (if any) equals the embedding."""
  if not cfg.text.tie_word_embeddings:
    return False
  tensors = {}
  for key, _, handle in _iter_tensors(files):
    if normalize_key(key) in (LM_HEAD, EMBED):
      tensors[normalize_key(key)] = handle.get_tensor(key)
  if LM_HEAD not in tensors:
    return True
  if EMBED in tensors and np.array_equal(tensors[LM_HEAD], tensors[EMBED]):
    return True
  logging.info("config asks for tied embeddings but %s differs from the embedding: "
               "loading an untied head, as transformers does", LM_HEAD)
  return False


def load(path: str | os.PathLike, dtype=jnp.float32, mesh: jax.sharding.Mesh | None = None, *,
         compute_dtype=None, rules=mesh_lib.LOGICAL_RULES, **overrides) -> AudioLM:
  """An AudioLM from a HF Qwen2-Audio checkpoint directory.

  dtype: parameter dtype (and compute dtype unless `compute_dtype` is given). mesh: place each
  tensor straight onto its sharding (rule table `rules`). overrides: extra config fields.
  """
  path = pathlib.Path(path)
  config_file = path / "config.json"
  if not config_file.exists():
    raise FileNotFoundError(f"{config_file} does not exist")
  param_dtype = jnp.dtype(dtype)
  compute = jnp.dtype(compute_dtype or dtype)
  cfg = AudioLMConfig.from_hf(json.loads(config_file.read_text()), dtype=compute.name,
                              param_dtype=param_dtype.name, **overrides)
  files = checkpoint_files(path)
  cfg = cfg.replace(tie_word_embeddings=_decide_tie(cfg, files))

  abstract = nnx.eval_shape(lambda: AudioLM(cfg, rngs=nnx.Rngs(0)))
  graphdef, abstract_state = nnx.split(abstract)
  targets = {_dotted(p): (p, v) for p, v in nnx.to_flat_state(abstract_state)}
  loaded: dict[tuple, jax.Array] = {}
  for key, file, handle in _iter_tensors(files):
    hf_key = normalize_key(key)
    if hf_key == LM_HEAD and cfg.text.tie_word_embeddings:
      continue  # Equal to the embedding (checked above).
    match = hf_to_nnx(hf_key)
    if match is None or match[0] not in targets:
      raise ValueError(f"unexpected key {key!r} in {file}: no parameter of the model "
                       f"({'no KEY_MAP rule' if match is None else match[0] + ' does not exist'})")
    name, transform = match
    nnx_path, variable = targets[name]
    if nnx_path in loaded:
      raise ValueError(f"key {key!r} in {file} is stored twice")
    array = _TRANSFORMS[transform](handle.get_tensor(key))
    expected = tuple(variable.get_value().shape)
    if tuple(array.shape) != expected:
      raise ValueError(f"shape mismatch for key {key!r} in {file}: stored {tuple(array.shape)} "
                       f"(as {name}), the config expects {expected}")
    array = array.astype(param_dtype)
    if mesh is None:
      loaded[nnx_path] = jnp.asarray(array)
    else:
      loaded[nnx_path] = mesh_lib.put_sharded(array, mesh_lib.variable_sharding(variable, mesh, rules))
    del array
  missing = [name for name, (p, _) in targets.items() if p not in loaded]
  if missing:
    hf_names = [(nnx_to_hf(n) or (n,))[0] for n in missing]
    raise ValueError(f"missing keys in {path}: {hf_names}")
  state = nnx.from_flat_state([(p, targets[_dotted(p)][1].replace(a)) for p, a in loaded.items()])
  return nnx.merge(graphdef, state)


def _to_host(x: jax.Array) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def save(model: AudioLM, path: str | os.PathLike, *, max_shard_bytes: int = 4 * 2**30) -> None:
  """Write config.json + safetensors that transformers' Qwen2AudioForConditionalGeneration reads.

  Above `max_shard_bytes` the weights are split into model-0000k-of-0000n.safetensors files
  with a model.safetensors.index.json. Tensors are fetched to the host one shard at a time;
  in a multi-process run every process must call this (gathers) and process 0 writes.
  """
  path = pathlib.Path(path)
  cfg: AudioLMConfig = model.config
  entries = []  # (hf key, value, transform)
  for p, variable in nnx.to_flat_state(nnx.state(model)):
    name = _dotted(p)
    match = nnx_to_hf(name)
    if match is None:
      raise ValueError(f"save: parameter {name} has no KEY_MAP rule")
    entries.append((match[0], variable.get_value(), match[1]))
    if match[0] == EMBED and cfg.text.tie_word_embeddings:
      entries.append((LM_HEAD, variable.get_value(), "linear_tied"))
  entries.sort(key=lambda e: e[0])
  shards, size = [[]], 0
  for entry in entries:
    nbytes = entry[1].size * entry[1].dtype.itemsize
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(entry)
    size += nbytes
  writer = jax.process_index() == 0
  if writer:
    path.mkdir(parents=True, exist_ok=True)
  names = ([SINGLE_FILE] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  weight_map, total = {}, 0
  for fname, shard in zip(names, shards):
    tensors = {}
    for key, value, transform in shard:
      host = _to_host(value)
      host = host if transform == "linear_tied" else _TRANSFORMS[transform](host)
      tensors[key] = np.ascontiguousarray(host)
      weight_map[key] = fname
      total += host.nbytes
    if writer:
      save_file(tensors, str(path / fname), metadata={"format": "pt"})
    del tensors
  if writer:
    if len(shards) > 1:
      index = {"metadata": {"total_size": total}, "weight_map": weight_map}
      (path / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True))
    (path / "config.json").write_text(json.dumps(cfg.to_hf(), indent=2, sort_keys=True))
