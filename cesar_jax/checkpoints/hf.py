"""Hugging Face checkpoints (config.json + safetensors) <-> `AudioLM`, both architectures.

  model = hf.load("/ckpt/Qwen2-Audio-7B-Instruct", dtype=jnp.bfloat16, mesh=mesh)
  model = hf.load("/ckpt/Qwen2.5-Omni-7B", dtype=jnp.float32, compute_dtype=jnp.bfloat16)
  hf.save(model, "/tmp/out")        # transformers `from_pretrained` reads it back

The architecture comes from config.json's `model_type`: `qwen2_audio` (Qwen2-Audio),
`qwen2_5_omni_thinker` (a standalone thinker: `audio_tower.*`, `model.*`, `lm_head.*`) or
`qwen2_5_omni` (the full release: `thinker_config` nested, `thinker.*` keys beside `talker.*`
and `token2wav.*`, which are skipped, as is `thinker.visual.*`).

One table per architecture (`KEY_MAP`, `OMNI_KEY_MAP`) pairs each HF key template with the NNX
parameter path and a layout transform; `{name}` fields are regex groups (layer index,
projection name) shared by both sides, so a table maps in both directions. Transforms:
"linear" (torch [out, in] <-> flax [in, out]), "conv" (torch [out, in, k] <-> flax [k, in,
out]), "none".

Layers are stacked in the model (models/stack.py: one array [L, ...] per parameter of a
layer stack, layer i at index i). The tables name layers one by one, as HF does: their NNX
side is the per-layer name (`language_model.layers.13.self_attn.k_proj.bias`), and layer 13 of
the stacked `language_model.layers.self_attn.k_proj.bias` is what it loads into and saves from
(`stacked_name`, `flat_parameters`).

Loading streams: parameter by parameter (safetensors `safe_open`, memory-mapped), each tensor
transformed, cast and placed, so a 7B never needs two full copies in host memory (without a
mesh, one stacked parameter is assembled on the host at a time). With a mesh, each parameter
is built with `jax.make_array_from_callback` on its sharding and each device's callback reads
only its own slice of its layers' tensors (`get_slice(key)[index]`), so on a pod a host reads
only what its devices hold. Keys written by transformers 5 in its in-memory layout
(`model.audio_tower.*`, `lm_head.weight`, ...) are accepted too. A missing, unexpected or
mis-shaped key is a ValueError naming it (and its file).

Dtypes: `load(dtype=...)` sets the parameter (master) dtype and remembers the checkpoint's own
dtype; `save` writes that dtype (or `param_dtype` for a model not loaded from HF) unless told
otherwise, in the tensors and in config.json.

Tying: transformers' Qwen2-Audio never ties its LM head (it always has `lm_head.weight`); the
Omni thinker ties by its own top-level `tie_word_embeddings` (False in the release). A config
asking for tied embeddings is loaded tied only when the stored head equals the embedding (or
is absent); otherwise it loads untied, as transformers would compute it. `save` of a tied
model writes the embedding as the head too.
"""

from __future__ import annotations

import contextlib
import dataclasses
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

from cesar_jax.models import stack
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
_N = "language_model.layers.{i}"
_ENCODER_LAYERS = (
    ("audio_tower.{conv}.weight", "audio_tower.{conv}.kernel", "conv"),
    ("audio_tower.{conv}.bias", "audio_tower.{conv}.bias", "none"),
    (_E + ".self_attn.{eattn}.weight", _E + ".self_attn.{eattn}.kernel", "linear"),
    (_E + ".self_attn.{ebias}.bias", _E + ".self_attn.{ebias}.bias", "none"),
    (_E + ".{eln}.weight", _E + ".{eln}.scale", "none"),
    (_E + ".{eln}.bias", _E + ".{eln}.bias", "none"),
    (_E + ".{fc}.weight", _E + ".{fc}.kernel", "linear"),
    (_E + ".{fc}.bias", _E + ".{fc}.bias", "none"),
)


def _decoder_keys(prefix: str, lm_head: str) -> tuple[tuple[str, str, str], ...]:
  d = prefix + "layers.{i}"
  return (
      (prefix + "embed_tokens.weight", "language_model.embed_tokens.embedding", "none"),
      (d + ".self_attn.{dattn}.weight", _N + ".self_attn.{dattn}.kernel", "linear"),
      (d + ".self_attn.{dbias}.bias", _N + ".self_attn.{dbias}.bias", "none"),
      (d + ".mlp.{mlp}.weight", _N + ".mlp.{mlp}.kernel", "linear"),
      (d + ".{rms}.weight", _N + ".{rms}.scale", "none"),
      (prefix + "norm.weight", "language_model.norm.scale", "none"),
      (lm_head, "language_model.lm_head.kernel", "linear"),
  )


# Qwen2-Audio, saved layout (`Qwen2AudioForConditionalGeneration.save_pretrained`).
KEY_MAP: tuple[tuple[str, str, str], ...] = _ENCODER_LAYERS + (
    ("audio_tower.embed_positions.weight", "audio_tower.embed_positions", "none"),
    ("audio_tower.layer_norm.weight", "audio_tower.layer_norm.scale", "none"),
    ("audio_tower.layer_norm.bias", "audio_tower.layer_norm.bias", "none"),
    ("multi_modal_projector.linear.weight", "multi_modal_projector.linear.kernel", "linear"),
    ("multi_modal_projector.linear.bias", "multi_modal_projector.linear.bias", "none"),
) + _decoder_keys("language_model.model.", LM_HEAD)

# The Qwen2.5-Omni thinker, saved layout (`Qwen2_5OmniThinkerForConditionalGeneration`):
# `audio_tower.*` (ln_post and proj inside, no position table: it is computed), `model.*`
# (the text model), `lm_head.weight`. `visual.*` is not part of this model.
OMNI_LM_HEAD = "lm_head.weight"
OMNI_EMBED = "model.embed_tokens.weight"
OMNI_KEY_MAP: tuple[tuple[str, str, str], ...] = _ENCODER_LAYERS + (
    ("audio_tower.ln_post.weight", "audio_tower.ln_post.scale", "none"),
    ("audio_tower.ln_post.bias", "audio_tower.ln_post.bias", "none"),
    ("audio_tower.proj.weight", "audio_tower.proj.kernel", "linear"),
    ("audio_tower.proj.bias", "audio_tower.proj.bias", "none"),
    ("audio_tower.audio_bos_eos_token.weight", "audio_tower.audio_bos_eos_token", "none"),
) + _decoder_keys("model.", OMNI_LM_HEAD)

# Other names -> the saved names of the tables above, first match wins: transformers 5's
# in-memory layout and, for Omni, the full Qwen2.5-Omni release (`thinker.` prefix).
_PREFIX_ALIASES = {
    "qwen2_audio": (
        ("model.audio_tower.", "audio_tower."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("model.language_model.", "language_model.model."),
        ("lm_head.", "language_model.lm_head."),
    ),
    "qwen2_5_omni": (
        ("thinker.model.audio_tower.", "audio_tower."),
        ("thinker.model.language_model.", "model."),
        ("thinker.model.visual.", "visual."),
        ("thinker.", ""),
        ("model.audio_tower.", "audio_tower."),
        ("model.language_model.", "model."),
        ("model.visual.", "visual."),
    ),
}
# Tensors of a checkpoint that are not part of the model (after the aliases): the full
# release's talker and vocoder, the thinker's vision tower. Skipped, counted in the log.
_IGNORED_PREFIXES = {"qwen2_audio": (), "qwen2_5_omni": ("talker.", "token2wav.", "visual.")}

# Layout transforms, HF -> NNX (both are their own inverse), and the axis permutation each is:
# NNX axis a holds HF axis perm[a].
_TRANSFORMS = {
    "none": lambda x: x,
    "linear": lambda x: x.T,
    "conv": lambda x: x.transpose(2, 1, 0),
}
_PERMS = {"none": None, "linear": (1, 0), "conv": (2, 1, 0)}


def _compile(template: str) -> re.Pattern:
  parts = re.split(r"\{(\w+)\}", template)
  regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{_GROUPS[p]})"
                  for i, p in enumerate(parts))
  return re.compile(regex + r"\Z")


@dataclasses.dataclass(frozen=True)
class _Layout:
  """The key table of one architecture, compiled both ways."""
  forward: tuple
  backward: tuple
  lm_head: str
  embed: str


_LAYOUTS = {
    arch: _Layout(tuple((_compile(h), n, t) for h, n, t in table),
                  tuple((_compile(n), h, t) for h, n, t in table), head, emb)
    for arch, table, head, emb in (("qwen2_audio", KEY_MAP, LM_HEAD, EMBED),
                                   ("qwen2_5_omni", OMNI_KEY_MAP, OMNI_LM_HEAD, OMNI_EMBED))
}


def _layout(arch: str) -> _Layout:
  if arch not in _LAYOUTS:
    raise ValueError(f"no checkpoint key table for arch={arch!r}; known: {sorted(_LAYOUTS)}")
  return _LAYOUTS[arch]


def normalize_key(key: str, arch: str = "qwen2_audio") -> str:
  """Map other spellings of a key (transformers-5 in-memory names, the full Omni release's
  `thinker.` prefix) onto the saved layout of `arch`'s key table."""
  for old, new in _PREFIX_ALIASES[arch]:
    if key.startswith(old):
      return new + key[len(old):]
  return key


def is_ignored(key: str, arch: str) -> bool:
  """A checkpoint tensor that belongs to no part of this model (e.g. Omni's talker)."""
  return normalize_key(key, arch).startswith(_IGNORED_PREFIXES[arch])


def hf_to_nnx(key: str, arch: str = "qwen2_audio") -> tuple[str, str] | None:
  """HF key -> (NNX dotted path, transform name), or None when no rule matches."""
  key = normalize_key(key, arch)
  for regex, template, transform in _layout(arch).forward:
    if m := regex.match(key):
      return template.format(**m.groupdict()), transform
  return None


def nnx_to_hf(path: str, arch: str = "qwen2_audio") -> tuple[str, str] | None:
  """NNX dotted path -> (HF key, transform name), or None when no rule matches."""
  for regex, template, transform in _layout(arch).backward:
    if m := regex.match(path):
      return template.format(**m.groupdict()), transform
  return None


def _dotted(path: tuple) -> str:
  return ".".join(str(p) for p in path)


_LAYER_INDEX = re.compile(r"(^|\.)layers\.(\d+)(?=\.)")


def stacked_name(name: str) -> tuple[str, int | None]:
  """A per-layer NNX name -> (the stacked parameter's name, the layer index), e.g.
  `language_model.layers.13.mlp.up_proj.kernel` -> (`language_model.layers.mlp.up_proj.kernel`,
  13); a name outside the layer stacks -> (name, None)."""
  m = _LAYER_INDEX.search(name)
  if m is None:
    return name, None
  return name[:m.start(2) - 1] + name[m.end(2):], int(m.group(2))


def _is_stacked(variable) -> bool:
  names = variable.get_metadata().get("out_sharding") or ()
  return bool(names) and names[0] == stack.LAYERS


def _layer_name(path: tuple, layer: int | None) -> str:
  """The per-layer NNX name of layer `layer` of a stacked parameter at `path` (None: as is)."""
  if layer is None:
    return _dotted(path)
  at = path.index("layers") + 1
  return _dotted(path[:at] + (layer,) + path[at:])


def _layers_of(variable) -> list[int | None]:
  """The layer indices a state entry holds: 0..L-1 for a stacked parameter, else [None]."""
  return list(range(variable.get_value().shape[0])) if _is_stacked(variable) else [None]


def _per_layer(path: tuple, variable) -> Iterator[tuple[str, Any]]:
  """(per-layer NNX name, value) of one state entry: L of them for a stacked parameter."""
  value = variable.get_value()
  for layer in _layers_of(variable):
    yield _layer_name(path, layer), (value if layer is None else value[layer])


def flat_parameters(model: nnx.Module) -> dict[str, Any]:
  """Every parameter by its per-layer NNX name (the key tables' names), stacks unstacked."""
  return dict(item for p, v in nnx.to_flat_state(nnx.state(model)) for item in _per_layer(p, v))


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
  layout = _layout(cfg.arch)
  tensors = {}
  for key, _, handle in _iter_tensors(files):
    if normalize_key(key, cfg.arch) in (layout.lm_head, layout.embed):
      tensors[normalize_key(key, cfg.arch)] = handle.get_tensor(key)
  if layout.lm_head not in tensors:
    return True
  if layout.embed in tensors and np.array_equal(tensors[layout.lm_head], tensors[layout.embed]):
    return True
  logging.info("config asks for tied embeddings but %s differs from the embedding: "
               "loading an untied head, as transformers does", layout.lm_head)
  return False


def read_config(path: str | os.PathLike, **overrides) -> AudioLMConfig:
  """The AudioLMConfig of a HF checkpoint directory (architecture from config.json)."""
  config_file = pathlib.Path(path) / "config.json"
  if not config_file.exists():
    raise FileNotFoundError(f"{config_file} does not exist")
  try:
    return AudioLMConfig.from_hf(json.loads(config_file.read_text()), **overrides)
  except ValueError as e:
    raise ValueError(f"{config_file}: {e}") from e


def _sliced_array(sources: list[tuple[Any, str]], transform: str, shape: tuple[int, ...],
                  dtype, sharding: jax.sharding.Sharding | None, stacked: bool) -> jax.Array:
  """A parameter from its tensors: `sources` = [(file handle, key)], one per layer when
  `stacked` (layer i at index i of dim 0), else one. With a sharding, each device's callback
  reads only its slice (`get_slice(key)[hf_index]`, of the layers it holds); transformed and
  cast. Without, the whole array on the default device."""
  perm = _PERMS[transform]
  cache: dict[tuple, np.ndarray] = {}  # replicated shards are read once

  def one(handle, key, index):
    hf_index = index if perm is None else tuple(index[perm[h]] for h in range(len(index)))
    return _TRANSFORMS[transform](handle.get_slice(key)[hf_index]).astype(dtype)

  def read(index: tuple[slice, ...]) -> np.ndarray:
    marker = tuple((s.start, s.stop, s.step) for s in index)
    if marker not in cache:
      if stacked:
        layers = range(len(sources))[index[0]]
        part = np.stack([one(*sources[i], index[1:]) for i in layers])
      else:
        part = one(*sources[0], index)
      cache[marker] = np.ascontiguousarray(part)
    return cache[marker]

  if sharding is None:
    return jnp.asarray(read(tuple(slice(None) for _ in shape)))
  return jax.make_array_from_callback(shape, sharding, read)


def load(path: str | os.PathLike, dtype=jnp.float32, mesh: jax.sharding.Mesh | None = None, *,
         compute_dtype=None, rules=mesh_lib.LOGICAL_RULES, **overrides) -> AudioLM:
  """An AudioLM from a HF checkpoint directory: Qwen2-Audio, a Qwen2.5-Omni thinker, or the
  full Qwen2.5-Omni release (its thinker; talker, token2wav and vision tensors are skipped).

  dtype: parameter dtype (and compute dtype unless `compute_dtype` is given); the checkpoint's
  own dtype is remembered (`config.checkpoint_dtype`) for `save`. mesh: every tensor is built
  straight on its sharding (rule table `rules`), each device reading only its slice of the
  file. overrides: extra config fields.
  """
  path = pathlib.Path(path)
  param_dtype = jnp.dtype(dtype)
  compute = jnp.dtype(compute_dtype or dtype)
  cfg = read_config(path, dtype=compute.name, param_dtype=param_dtype.name, **overrides)
  files = checkpoint_files(path)
  cfg = cfg.replace(tie_word_embeddings=_decide_tie(cfg, files))
  layout = _layout(cfg.arch)

  abstract = nnx.eval_shape(lambda: AudioLM(cfg, rngs=nnx.Rngs(0)))
  graphdef, abstract_state = nnx.split(abstract)
  targets = {_dotted(p): (p, v) for p, v in nnx.to_flat_state(abstract_state)}
  sources: dict[str, dict[int | None, tuple[Any, str]]] = {}  # stacked name -> layer -> source
  transforms: dict[str, str] = {}
  ignored = 0
  with contextlib.ExitStack() as opened:
    for file in files:
      handle = opened.enter_context(safe_open(file, framework="numpy"))
      for key in handle.keys():
        hf_key = normalize_key(key, cfg.arch)
        if hf_key == layout.lm_head and cfg.text.tie_word_embeddings:
          continue  # Equal to the embedding (checked above).
        if is_ignored(key, cfg.arch):
          ignored += 1
          continue
        match = hf_to_nnx(hf_key, cfg.arch)
        name, layer = stacked_name(match[0]) if match else (None, None)
        variable = targets[name][1] if name in targets else None
        if variable is not None and layer not in _layers_of(variable):
          variable = None  # e.g. layer 7 of a 2-layer stack
        if variable is None:
          raise ValueError(f"unexpected key {key!r} in {file}: no parameter of the {cfg.arch} "
                           "model (" + ('no key table rule' if match is None else
                                        match[0] + ' does not exist') + ")")
        transform = match[1]
        if layer in sources.setdefault(name, {}):
          raise ValueError(f"key {key!r} in {file} is stored twice")
        stored_shape = tuple(handle.get_slice(key).get_shape())
        perm = _PERMS[transform]
        shape = stored_shape if perm is None else tuple(stored_shape[a] for a in perm)
        expected = tuple(variable.get_value().shape)[1 if layer is not None else 0:]
        if shape != expected:
          raise ValueError(f"shape mismatch for key {key!r} in {file}: stored {stored_shape} "
                           f"(as {match[0]}: {shape}), the config expects {expected}")
        sources[name][layer] = (handle, key)
        transforms[name] = transform
    if ignored:
      logging.info("%s: skipped %d tensors that are not part of the %s model (%s)", path, ignored,
                   cfg.arch, ", ".join(_IGNORED_PREFIXES[cfg.arch]))
    missing = [_layer_name(p, layer) for name, (p, variable) in targets.items()
               for layer in _layers_of(variable) if layer not in sources.get(name, {})]
    if missing:
      hf_names = [(nnx_to_hf(n, cfg.arch) or (n,))[0] for n in missing]
      raise ValueError(f"missing keys in {path}: {hf_names}")
    loaded = []
    for name, (p, variable) in targets.items():
      ordered = [sources[name][layer] for layer in _layers_of(variable)]
      sharding = None if mesh is None else mesh_lib.variable_sharding(variable, mesh, rules)
      loaded.append((p, variable.replace(_sliced_array(
          ordered, transforms[name], tuple(variable.get_value().shape), param_dtype, sharding,
          _is_stacked(variable)))))
  return nnx.merge(graphdef, nnx.from_flat_state(loaded))


def _to_host(x: jax.Array) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def save(model: AudioLM, path: str | os.PathLike, *, max_shard_bytes: int = 4 * 2**30,
         dtype=None) -> None:
  """Write config.json + safetensors that transformers reads back (`Qwen2AudioForConditional
  Generation` or `Qwen2_5OmniThinkerForConditionalGeneration`, by `model.config.arch`).

  dtype: the tensors' and config.json's dtype; default `config.export_dtype`: the dtype of the
  checkpoint the model was loaded from, else `param_dtype` (float32 masters stay float32 even
  when compute is bfloat16). Above `max_shard_bytes` the weights are split into
  model-0000k-of-0000n.safetensors files with a model.safetensors.index.json. Tensors are
  fetched to the host one shard at a time; in a multi-process run every process must call this
  (gathers) and process 0 writes.
  """
  path = pathlib.Path(path)
  cfg: AudioLMConfig = model.config
  out_dtype = jnp.dtype(dtype or cfg.export_dtype)
  cfg = cfg.replace(checkpoint_dtype=out_dtype.name)
  layout = _layout(cfg.arch)
  entries = []  # (hf key, value, transform)
  for name, value in flat_parameters(model).items():
    match = nnx_to_hf(name, cfg.arch)
    if match is None:
      raise ValueError(f"save: parameter {name} has no key table rule for arch={cfg.arch!r}")
    entries.append((match[0], value, match[1]))
    if match[0] == layout.embed and cfg.text.tie_word_embeddings:
      entries.append((layout.lm_head, value, "linear_tied"))
  entries.sort(key=lambda e: e[0])
  shards, size = [[]], 0
  for entry in entries:
    nbytes = entry[1].size * out_dtype.itemsize
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
      tensors[key] = np.ascontiguousarray(host.astype(out_dtype))
      weight_map[key] = fname
      total += tensors[key].nbytes
    if writer:
      save_file(tensors, str(path / fname), metadata={"format": "pt"})
    del tensors
  if writer:
    if len(shards) > 1:
      index = {"metadata": {"total_size": total}, "weight_map": weight_map}
      (path / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True))
    (path / "config.json").write_text(json.dumps(cfg.to_hf(), indent=2, sort_keys=True))
