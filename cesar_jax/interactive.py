"""What the notebooks call: configs by name, any checkpoint -> scaling report, sampled chains.

The notebooks (`notebooks/*.ipynb`) hold no logic of their own; the few steps they need beyond
the jobs (`cesar_jax.sft`, `cesar_jax.rl.trainer`, `cesar_jax.eval.evaluate`) live here:

    config = interactive.get_config("demo", {"stages.sft.sft.steps": 20})  # configs/demo.py
    model, tokenizer, run_config = interactive.load_model("runs/demo/cesar")   # or a HF folder
    interactive.match_front_end(eval_config, path)   # n_mels, chunk length of the encoder
    report = interactive.evaluate_checkpoint("/path/to/hf_or_workdir", eval_config, "runs/ev")
    rows = interactive.sample_chains(model, tokenizer, items, eval_config, budget=32)

`get_config` takes overrides as `{"a.b": value}`, the notebook twin of `--config.a.b=value`.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from cesar_jax import model_store
from cesar_jax import rewards as rewards_lib
from cesar_jax import tokenizers as tok_lib
from cesar_jax.eval import evaluate, report, scaling, sweep
from cesar_jax.models import features
from cesar_jax.parallel import mesh as mesh_lib
from cesar_jax.sampling import sampler as sampler_lib


def repo_root() -> pathlib.Path:
  """The checkout holding `configs/` beside the package (an editable install or a clone)."""
  root = pathlib.Path(__file__).resolve().parents[1]
  if not (root / "configs").is_dir():
    raise FileNotFoundError(f"no configs/ folder in {root}: install the package editable from a "
                            "clone of the repository (pip install -e .)")
  return root


def override(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
  """Sets `{"a.b": value}` fields in place; an unknown field is an error naming it."""
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split(".")
    node = config
    for i, name in enumerate(parents):
      if name not in node:
        raise KeyError(f"config override {dotted!r}: no field {'.'.join(parents[:i + 1])!r}")
      node = node[name]
    if leaf not in node:
      raise KeyError(f"config override {dotted!r}: no field {dotted!r}")
    node[leaf] = tuple(value) if isinstance(value, list) else value


def get_config(name: str, overrides: Mapping[str, Any] | None = None,
               arg: str | None = None) -> ml_collections.ConfigDict:
  """`configs/<name>.py`'s `get_config(arg)` with `overrides` applied (`{"a.b": value}`)."""
  root = str(repo_root())
  if root not in sys.path:
    sys.path.insert(0, root)
  module = importlib.import_module(f"configs.{name}")
  config = module.get_config(arg)
  override(config, overrides or {})
  return config


def load_model(path: str, mesh: jax.sharding.Mesh | None = None
               ) -> tuple[Any, tok_lib.Tokenizer, ml_collections.ConfigDict | None]:
  """(model, tokenizer, run config or None) from a run workdir or a Hugging Face folder."""
  tokenizer = model_store.load_tokenizer("", path)
  if model_store.is_run_workdir(path):
    model, run_config = model_store.restore_model(path, mesh=mesh)
    return model, tokenizer, run_config
  if model_store.is_hf_dir(path):
    return model_store.load_policy(path, {}, mesh, tokenizer=tokenizer), tokenizer, None
  raise FileNotFoundError(f"{path!r} is neither a run workdir (model_config.json + checkpoints/) "
                          "nor a Hugging Face folder (config.json + safetensors)")


def front_end(path: str) -> tuple[int, float]:
  """(n_mels, chunk_seconds) a checkpoint's audio encoder expects (run workdir or HF folder).

  The encoder reads `2 * max_source_positions` feature frames (10 ms each), so the chunk is
  that many hops long: 30 s for Qwen2-Audio, 2 s for the demo's tiny model.
  """
  if model_store.is_run_workdir(path):
    audio = model_store.read_model_config(path).audio
    n_mels, positions = audio.num_mel_bins, audio.max_source_positions
  elif model_store.is_hf_dir(path):
    hf_config = json.loads((pathlib.Path(path) / "config.json").read_text())
    audio = hf_config.get("audio_config", {})
    n_mels, positions = audio.get("num_mel_bins", 128), audio.get("max_source_positions", 1500)
  else:
    raise FileNotFoundError(f"{path!r} is neither a run workdir nor a Hugging Face folder")
  return int(n_mels), 2 * int(positions) * features.HOP_LENGTH / features.SAMPLE_RATE


def match_front_end(config: ml_collections.ConfigDict, path: str) -> None:
  """Sets `config.data.n_mels` / `chunk_seconds` to what the checkpoint at `path` expects."""
  config.data.n_mels, config.data.chunk_seconds = front_end(path)


def _sampler_config(tokenizer: tok_lib.Tokenizer, config: ml_collections.ConfigDict
                    ) -> sampler_lib.SamplerConfig:
  # The sweep sets every row's protocol itself (cap / extend; prompted by its prompts).
  return sampler_lib.SamplerConfig.from_tokenizer(
      tokenizer, max_new_tokens=int(config.eval.max_new_tokens), budget_mode="forced",
      prompt_buckets=tuple(config.data.buckets),
      continuation=config.eval.get("continuation", None))


def evaluate_checkpoint(path: str, config: ml_collections.ConfigDict, workdir: str,
                        name: str | None = None) -> dict[str, Any]:
  """The scaling sweep of one checkpoint (run workdir or HF folder) -> report in `workdir`.

  `config` is an `eval_scaling` config (data: synthetic, MMAU or MMAR with a local audio
  folder). A run workdir goes through `evaluate.evaluate`; a Hugging Face folder is loaded with
  `hf.load` and swept the same way (curve, perception where the items have events). Returns the
  report dict (`report.json`'s content).
  """
  name = name or pathlib.Path(path).name
  if model_store.is_run_workdir(path):
    return evaluate.evaluate({name: path}, config, workdir)
  mesh = mesh_lib.make_mesh(tuple(config.mesh.shape), mesh_lib.MESH_AXES)
  model, tokenizer, _ = load_model(path, mesh)
  items = evaluate.load_items(config.data)
  cfg = evaluate.sweep_config(config)
  out = sweep.run_sweep(model, tokenizer, items, _sampler_config(tokenizer, config), cfg,
                        mesh=mesh)
  main = cfg.protocols[0]
  entry: dict[str, Any] = {"curve": scaling.scaling_curve(
      out.select(main), num_resamples=int(config.eval.num_resamples), seed=int(config.seed))}
  if (p := evaluate.perception_summary(out, rows=out.mask(main))) is not None:
    entry["perception"] = p
  return report.write_report(workdir, {name: entry},
                             chance_accuracy=evaluate.chance_accuracy(items))


def sample_chains(model, tokenizer: tok_lib.Tokenizer, items: Sequence[Mapping[str, Any]],
                  config: ml_collections.ConfigDict, *, budget: int, num_samples: int = 2,
                  reward_config: ml_collections.ConfigDict | None = None,
                  seed: int = 0, mesh: jax.sharding.Mesh | None = None) -> list[dict[str, Any]]:
  """Samples reasoning chains under a think budget and scores each with every reward component.

  Args:
    model, tokenizer: e.g. from `load_model`.
    items: synthetic or benchmark items (audio, question, choices, answer).
    config: an `eval_scaling`-style config (its data front end, buckets, max_new_tokens).
    budget: the think budget L_max (tokens).
    num_samples: chains per item.
    reward_config: the rewards to score with (default: CESAR's preset).
    seed: the sampling seed.
    mesh: the device mesh to sample on (None: the default device).

  Returns:
    One dict per chain, item-major: item, sample, text, think_tokens, correct (the official
    string match) and one key per reward component plus `total`.
  """
  cfg = sweep.SweepConfig(budgets=(int(budget),), protocols=tuple(config.eval.protocols)[:1],
                          num_samples=int(num_samples), items_per_call=len(items),
                          temperature=float(config.eval.temperature), greedy=False,
                          n_mels=int(config.data.n_mels),
                          chunk_seconds=float(config.data.chunk_seconds), seed=int(seed))
  out = sweep.run_sweep(model, tokenizer, items, _sampler_config(tokenizer, config), cfg,
                        mesh=mesh)
  examples = [{"question": items[i]["question"], "choices": list(items[i]["choices"]),
               "answer": items[i]["answer"]} for i in out.results.item]
  scores = rewards_lib.score_texts(out.completions, examples,
                                   reward_config or rewards_lib.default_config("cesar"), tokenizer)
  rows = []
  for row, text in enumerate(out.completions):
    rows.append({"item": int(out.results.item[row]), "sample": int(out.results.sample[row]),
                 "text": text, "think_tokens": int(out.results.think_tokens[row]),
                 "correct": bool(out.results.correct[row]),
                 **{k: float(np.asarray(v)[row]) for k, v in scores.items()}})
  return rows
