"""Where a policy comes from, and how a finished run's model is read back.

`config.init_from` names the starting point of a training run:

* `""`: random initialisation from `config.model` (a preset plus overrides, see
  `cesar_jax.models.config.from_config_dict`), seeded by `config.seed`;
* a Hugging Face directory (`config.json` + safetensors): `cesar_jax.checkpoints.hf.load`;
* a previous run's workdir (this project's `sft` or `grpo` job): the parameters of its latest
  finalized orbax checkpoint, with the model config that run resolved.

Every run writes two small files to its workdir at start (`write_run_files`), so a workdir is
self-contained: `model_config.json` (the resolved `AudioLMConfig`: vocabulary size and audio
token id included) and `tokenizer.json` (the tokenizer it trained with). The eval sweep reads a
trained model back with

    model, config = model_store.restore_model(workdir)          # latest checkpoint
    tokenizer = model_store.load_tokenizer(workdir)

Checkpoints hold `{"params": nnx.State, "opt_state": ...}` (see `cesar_jax.rl.train_lib`);
`restore_model` reads only the parameters (orbax partial restore), never the optimizer state.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import nnx

from cesar_jax import config as config_lib
from cesar_jax import lora as lora_lib
from cesar_jax import tokenizers as tok_lib
from cesar_jax.models import config as model_config_lib
from cesar_jax.models.audio_lm import AudioLM
from cesar_jax.parallel import mesh as mesh_lib

MODEL_CONFIG_FILE = "model_config.json"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINT_DIR = "checkpoints"


# ---------------------------------------------------------------------------------------------
# What a path is.
# ---------------------------------------------------------------------------------------------


def is_run_workdir(path: str | os.PathLike) -> bool:
  """A workdir of this project's training jobs (it has run files and a checkpoints folder)."""
  path = epath.Path(path)
  return (path / MODEL_CONFIG_FILE).is_file() and (path / CHECKPOINT_DIR).is_dir()


def is_hf_dir(path: str | os.PathLike) -> bool:
  """A Hugging Face checkpoint directory (config.json + safetensors)."""
  path = epath.Path(path)
  return (path / "config.json").is_file() and (
      any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file())


# ---------------------------------------------------------------------------------------------
# Tokenizer and model config.
# ---------------------------------------------------------------------------------------------


def load_tokenizer(spec: str = "", init_from: str = "") -> tok_lib.Tokenizer:
  """The tokenizer of a run.

  `spec`: a tokenizer.json (or a directory holding one), a run workdir, or "" = the one that
  goes with `init_from` (a run workdir's or a HF directory's tokenizer.json), else the built-in.
  """
  for path in (spec, init_from):
    if not path:
      continue
    p = epath.Path(path)
    candidate = p / TOKENIZER_FILE if p.is_dir() else p
    if candidate.is_file():
      return _tokenizer_from(candidate)
    if path == spec:
      raise FileNotFoundError(f"config.tokenizer={spec!r}: no tokenizer.json there")
  return tok_lib.Tokenizer.builtin()


def _tokenizer_from(path: epath.Path) -> tok_lib.Tokenizer:
  """A tokenizer.json from a local path or a URI (read through epath)."""
  if "://" not in os.fspath(path):
    return tok_lib.Tokenizer.from_file(path)
  import tokenizers as hf_tokenizers  # pylint: disable=g-import-not-at-top
  return tok_lib.Tokenizer(hf_tokenizers.Tokenizer.from_str(path.read_text()))


def model_config_to_dict(cfg: model_config_lib.AudioLMConfig) -> dict[str, Any]:
  return dataclasses.asdict(cfg)


def model_config_from_dict(d: Mapping[str, Any]) -> model_config_lib.AudioLMConfig:
  d = dict(d)
  return model_config_lib.AudioLMConfig(
      audio=model_config_lib.AudioEncoderConfig(**d.pop("audio")),
      text=model_config_lib.DecoderConfig(**d.pop("text")), **d)


def read_model_config(workdir: str | os.PathLike) -> model_config_lib.AudioLMConfig:
  path = epath.Path(workdir) / MODEL_CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} does not exist: {workdir} is not a workdir of a sft/grpo run")
  return model_config_from_dict(json.loads(path.read_text()))


def resolve_model_config(model_section: Mapping[str, Any],
                         tokenizer: tok_lib.Tokenizer) -> model_config_lib.AudioLMConfig:
  """`config.model` -> AudioLMConfig; `vocab_size` / `audio_token_id` default to the tokenizer's."""
  section = dict(model_section.items())
  section.setdefault("vocab_size", tokenizer.vocab_size)
  section.setdefault("audio_token_id", tokenizer.audio_id)
  cfg = model_config_lib.from_config_dict(section)
  _check_vocab(cfg, tokenizer, "config.model")
  return cfg


def _check_vocab(cfg: model_config_lib.AudioLMConfig, tokenizer: tok_lib.Tokenizer,
                 where: str) -> None:
  if tokenizer.vocab_size > cfg.text.vocab_size:
    raise ValueError(f"{where}: the model's vocab_size {cfg.text.vocab_size} is smaller than the "
                     f"tokenizer's {tokenizer.vocab_size}")
  if cfg.audio_token_id != tokenizer.audio_id:
    raise ValueError(f"{where}: the model's audio_token_id {cfg.audio_token_id} is not the "
                     f"tokenizer's <|AUDIO|> id {tokenizer.audio_id}")


def write_run_files(workdir: str | os.PathLike, cfg: model_config_lib.AudioLMConfig,
                    tokenizer: tok_lib.Tokenizer) -> None:
  """`model_config.json` and `tokenizer.json` in the workdir (process 0 only)."""
  if jax.process_index() != 0:
    return
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / MODEL_CONFIG_FILE).write_text(
      json.dumps(model_config_to_dict(cfg), indent=2, sort_keys=True) + "\n")
  (workdir / TOKENIZER_FILE).write_text(tokenizer.backend.to_str(pretty=False))


# ---------------------------------------------------------------------------------------------
# Models.
# ---------------------------------------------------------------------------------------------


def init_model(cfg: model_config_lib.AudioLMConfig, seed: int = 0,
               mesh: jax.sharding.Mesh | None = None) -> AudioLM:
  """Random init; with a mesh every parameter is created directly on its sharding."""
  if mesh is None:
    return AudioLM(cfg, rngs=nnx.Rngs(seed))
  abstract = nnx.eval_shape(lambda: AudioLM(cfg, rngs=nnx.Rngs(seed)))
  graphdef, abstract_state = nnx.split(abstract)
  shardings = mesh_lib.state_shardings(abstract_state, mesh)
  state = jax.jit(lambda: nnx.state(AudioLM(cfg, rngs=nnx.Rngs(seed))),
                  out_shardings=shardings)()
  return nnx.merge(graphdef, state)


def abstract_model(cfg: model_config_lib.AudioLMConfig,
                   mesh: jax.sharding.Mesh | None = None) -> tuple[nnx.GraphDef, nnx.State]:
  """(graphdef, state of ShapeDtypeStructs carrying the mesh shardings) without allocating."""
  abstract = nnx.eval_shape(lambda: AudioLM(cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  if mesh is not None:
    shardings = mesh_lib.state_shardings(state, mesh)
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                         state, shardings)
  return graphdef, state


def restore_params(workdir: str | os.PathLike, graphdef: nnx.GraphDef, abstract_state: nnx.State,
                   step: int | None = None, rest: nnx.State | None = None
                   ) -> tuple[AudioLM, int, dict[str, Any]]:
  """The `params` of a run's checkpoint (latest finalized one by default).

  Only the parameters are read (orbax partial restore): the optimizer state stays on disk.
  `rest`: the model's variables the checkpoint does not hold (a LoRA run's frozen base).
  Returns (model, step, the checkpoint's metadata: the run's config as a dict).
  """
  directory = config_lib.workdir_path(workdir) / CHECKPOINT_DIR  # absolute, or a URI
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      create=False, read_only=True))
  try:
    if step is None:
      step = manager.latest_step()
      if step is None:
        raise FileNotFoundError(f"{directory} holds no finalized checkpoint")
    elif step not in manager.all_steps():
      raise FileNotFoundError(f"{directory}: no finalized checkpoint for step {step}; have "
                              f"{sorted(manager.all_steps())}")
    item = {"params": abstract_state}
    restore_args = ocp.checkpoint_utils.construct_restore_args(item)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item=item, restore_args=restore_args,
                                     partial_restore=True),
        metadata=ocp.args.JsonRestore()))
  except FileNotFoundError:
    raise
  except Exception as e:
    raise RuntimeError(f"could not restore the params of {directory}/{step}: {e}") from e
  finally:
    manager.close()
  params = restored["state"]["params"]
  # A partial restore leaves what the checkpoint lacks as the abstract template: never a model.
  missing = [jax.tree_util.keystr(path) for path, x in jax.tree_util.tree_leaves_with_path(params)
             if isinstance(x, jax.ShapeDtypeStruct)]
  if missing:
    raise ValueError(
        f"{directory}/{step} holds no {missing[0]} ({len(missing)} of the model's parameters "
        "are missing): its parameter tree is not this model's (a checkpoint written before the "
        "layers were stacked names them by index, layers/0/...; see models/stack.py)")
  model = nnx.merge(graphdef, params) if rest is None else nnx.merge(graphdef, params, rest)
  return model, int(step), dict(restored["metadata"] or {})


def restore_model(workdir: str | os.PathLike, *, mesh: jax.sharding.Mesh | None = None,
                  step: int | None = None) -> tuple[AudioLM, ml_collections.ConfigDict]:
  """A trained model from a run workdir and the run's config.

  Args:
    workdir: the `--workdir` of a `sft` or `grpo` run.
    mesh: place the parameters on this mesh (None: default device).
    step: a checkpoint step (default: the latest finalized one).

  Returns:
    (model, config): the AudioLM with the checkpoint's parameters and the run's config
    (`config.json`, else the one stored with the checkpoint).
  """
  run_config = (config_lib.load(workdir) if (epath.Path(workdir) / "config.json").is_file()
                else None)
  if run_config is not None and lora_lib.enabled(run_config.get("lora")):
    # A LoRA run checkpoints its adapters only: rebuild its base, then read the adapters.
    base = load_policy(run_config.init_from, run_config.model, mesh,
                       tokenizer=load_tokenizer("", workdir), seed=int(run_config.seed))
    add_adapters(base, run_config.lora, mesh, seed=int(run_config.seed),
                 master=jnp.dtype(run_config.model.get("param_dtype", "float32")))
    graphdef, state = nnx.split(base)
    adapters, rest = nnx.split_state(state, nnx.LoRAParam, ...)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            adapters)
    model, step, metadata = restore_params(workdir, graphdef, abstract, step, rest=rest)
  else:
    cfg = read_model_config(workdir)
    graphdef, abstract_state = abstract_model(cfg, mesh)
    model, step, metadata = restore_params(workdir, graphdef, abstract_state, step)
  logging.info("restored the model of %s at step %d", workdir, step)
  if run_config is not None:
    return model, run_config
  return model, ml_collections.ConfigDict(metadata)


def add_adapters(model: AudioLM, section: Mapping[str, Any], mesh: jax.sharding.Mesh | None, *,
                 seed: int, master) -> AudioLM:
  """LoRA on `model` (in place; `cesar_jax.lora`): the base frozen in the compute dtype (no
  master copy of weights that never change), adapters in the `master` dtype (the optimizer's).
  A model that already has adapters (a LoRA run's) keeps them."""
  from cesar_jax.rl import train_step  # pylint: disable=g-import-not-at-top
  compute = model.config.compute_dtype
  base = nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))
  nnx.update(model, _place(train_step.cast_floating(base, compute), mesh))
  model.config = model.config.replace(param_dtype=compute.name)
  if not nnx.state(model, nnx.LoRAParam):
    lora_lib.apply(model, section, seed=seed)
  adapters = nnx.state(model, nnx.LoRAParam)
  nnx.update(model, _place(train_step.cast_floating(adapters, master), mesh))
  return model


def _place(state: nnx.State, mesh: jax.sharding.Mesh | None) -> nnx.State:
  if mesh is None:
    return state
  return jax.device_put(state, mesh_lib.state_shardings(state, mesh))


def load_policy(init_from: str, model_section: Mapping[str, Any],
                mesh: jax.sharding.Mesh | None = None, *,
                tokenizer: tok_lib.Tokenizer | None = None, seed: int = 0) -> AudioLM:
  """The starting policy of a run (see the module docstring), placed on `mesh`.

  Args:
    init_from: "" (random init from `model_section`), a HF directory or a run workdir.
    model_section: `config.model` (preset + overrides); for a HF directory only its `dtype` /
      `param_dtype` are used, for a workdir it is ignored (that run's resolved config is used).
    mesh: the device mesh.
    tokenizer: checked against the model (vocabulary size, audio id); default `load_tokenizer`.
    seed: the random init seed.
  """
  tokenizer = tokenizer or load_tokenizer("", init_from)
  if not init_from:
    model = init_model(resolve_model_config(model_section, tokenizer), seed, mesh)
  elif is_run_workdir(init_from):
    model, _ = restore_model(init_from, mesh=mesh)
  elif is_hf_dir(init_from):
    dtype = jnp.dtype(model_section.get("param_dtype", "float32"))
    compute = jnp.dtype(model_section.get("dtype", dtype.name))
    from cesar_jax.checkpoints import hf  # pylint: disable=g-import-not-at-top
    model = hf.load(init_from, dtype=dtype, mesh=mesh, compute_dtype=compute,
                    remat=str(model_section.get("remat", "none")))
  else:
    raise FileNotFoundError(
        f"config.init_from={init_from!r} is neither a run workdir (with {MODEL_CONFIG_FILE} and "
        f"{CHECKPOINT_DIR}/) nor a Hugging Face directory (config.json + safetensors)")
  _check_vocab(model.config, tokenizer, f"init_from={init_from!r}")
  return model
