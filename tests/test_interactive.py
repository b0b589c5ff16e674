"""The notebooks' helpers: config overrides, any checkpoint -> report, chains with rewards."""

import json

import numpy as np
import pytest
from flax import nnx

from cesar_jax import interactive, model_store, rewards
from cesar_jax import tokenizers as tok_lib
from cesar_jax.checkpoints import hf
from cesar_jax.eval import evaluate, scoring
from cesar_jax.parallel import mesh as mesh_lib

EVAL_OVERRIDES = {
    "data.question_types": ("count_beeps",), "data.synthetic.clip_seconds": 2.0,
    "data.synthetic.max_count": 5, "data.chunk_seconds": 2.0, "data.buckets": (192,),
    "eval.budgets": (0, 8), "eval.max_new_tokens": 24, "eval.num_resamples": 20,
    "eval.items_per_call": 4,
}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  """A tiny random model of the built-in tokenizer's vocabulary, saved as a HF folder."""
  tok = tok_lib.Tokenizer.builtin()
  cfg = model_store.resolve_model_config({"preset": "tiny", "max_source_positions": 100}, tok)
  model = model_store.init_model(cfg, seed=0)
  path = tmp_path_factory.mktemp("hf")
  hf.save(model, path)
  return str(path), model


def test_override_sets_fields_and_names_unknown_ones():
  config = interactive.get_config("smoke", {"steps": 3, "data.synthetic.max_count": 4},
                                  arg="sft_steps=7")
  assert config.steps == 3 and config.data.synthetic.max_count == 4 and config.sft.steps == 7
  with pytest.raises(KeyError, match="'data.nope'"):
    interactive.override(config, {"data.nope": 1})
  with pytest.raises(KeyError, match="no field 'nothere'"):
    interactive.override(config, {"nothere.x": 1})


def test_load_model_reads_a_hf_folder_and_rejects_other_paths(hf_dir, tmp_path):
  path, original = hf_dir
  model, tok, run_config = interactive.load_model(path)
  assert run_config is None and tok.vocab_size == tok_lib.Tokenizer.builtin().vocab_size
  a = dict(nnx.to_flat_state(nnx.state(original, nnx.Param)))
  b = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k].value), np.asarray(b[k].value), err_msg=str(k))
  with pytest.raises(FileNotFoundError, match="neither a run workdir"):
    interactive.load_model(str(tmp_path))


def test_front_end_of_a_hf_folder(hf_dir, tmp_path):
  config = interactive.get_config("eval_scaling")
  assert (config.data.n_mels, config.data.chunk_seconds) == (128, 30.0)
  interactive.match_front_end(config, hf_dir[0])
  tiny = hf_dir[1].config.audio
  assert config.data.n_mels == tiny.num_mel_bins
  assert config.data.chunk_seconds == pytest.approx(2.0)  # max_source_positions 100: 200 frames
  with pytest.raises(FileNotFoundError, match="neither"):
    interactive.front_end(str(tmp_path))


# The two sweeps below compile a sampler and the rewards (~20 s on 2 busy cores); the default
# set runs the same helpers through notebooks/evaluate_checkpoint.ipynb (tests/test_notebooks.py).
@pytest.mark.slow
def test_evaluate_checkpoint_on_a_hf_folder_writes_the_report(hf_dir, tmp_path):
  config = interactive.get_config("eval_scaling", EVAL_OVERRIDES, arg="num_items=4")
  out = interactive.evaluate_checkpoint(hf_dir[0], config, str(tmp_path / "ev"), name="random")
  m = out["models"]["random"]
  assert m["budgets"] == [0, 8] and m["num_items"] == 4
  assert all(0 <= a <= 100 for a in m["accuracy"])
  assert out["chance_accuracy"] == pytest.approx(25.0)  # 4 options per count question
  assert json.loads((tmp_path / "ev" / "report.json").read_text())["models"]["random"] == m
  for file in out["figures"].values():
    assert (tmp_path / "ev" / file).is_file()


@pytest.mark.slow
def test_sample_chains_rows_hold_every_reward_component(hf_dir):
  path, _ = hf_dir
  config = interactive.get_config("eval_scaling", EVAL_OVERRIDES, arg="num_items=4")
  # The sweep's mesh and row count (4 items x 2): the sampler compiled above is reused.
  mesh = mesh_lib.make_mesh(tuple(config.mesh.shape), mesh_lib.MESH_AXES)
  model, tok, _ = interactive.load_model(path, mesh)
  items = evaluate.load_items(config.data)
  reward_config = rewards.default_config("cesar")
  rows = interactive.sample_chains(model, tok, items, config, budget=4, num_samples=2,
                                   reward_config=reward_config, mesh=mesh)
  assert [(r["item"], r["sample"]) for r in rows] == [(i, s) for i in range(4) for s in range(2)]
  weights = dict(reward_config.weights)
  for r in rows:
    assert r["think_tokens"] <= 4
    assert r["total"] == pytest.approx(sum(w * r[k] for k, w in weights.items()), abs=1e-5)
    it = items[r["item"]]
    assert r["correct"] == scoring.score(scoring.extract_answer(r["text"]), it["answer"],
                                         it["choices"])
