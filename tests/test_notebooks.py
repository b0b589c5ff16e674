"""The notebooks run, in a Jupyter kernel (papermill), with parameters that shrink them.

Each notebook is executed top to bottom in a fresh IPython kernel (the `python3` kernel of this
interpreter, so the package under test is the one imported): a cell that raises fails the
test with the cell and its traceback. Parameters go into the cell tagged `parameters`
(papermill's convention); their values here make a tiny model train for a few steps.
"""

import json
import os
import pathlib

import pytest

papermill = pytest.importorskip("papermill", reason="the [test] extra installs papermill")

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))

# A few steps of everything: SFT 4 steps, GRPO 2 steps x 2, a 4-item sweep over 2 budgets.
TRAIN_OVERRIDES = {
    "stages.sft.sft.steps": 4, "stages.sft.sft.batch_size": 4,
    "stages.sft.sft.max_target_tokens": 48, "stages.sft.sft.warmup_steps": 1,
    **{f"stages.{name}.{key}": value for name in ("outcome_s0", "cesar_s0") for key, value in {
        "steps": 2, "data.batch_size": 2, "sampling.num_samples": 2,
        "sampling.max_new_tokens": 16, "optim.warmup_steps": 1}.items()},
    "stages.eval.data.num_examples": 4, "stages.eval.eval.budgets": [0, 8],
    "stages.eval.eval.fixed_budget": 8,
    "stages.eval.eval.max_new_tokens": 24, "stages.eval.eval.num_resamples": 20,
    "stages.eval.eval.items_per_call": 4,
}
EVAL_OVERRIDES = {
    "data.question_types": ["count_beeps"], "data.synthetic.clip_seconds": 2.0,
    "data.buckets": [192], "eval.budgets": [0, 8], "eval.max_new_tokens": 24,
    "eval.num_resamples": 20, "eval.items_per_call": 4,
}


def _execute(name: str, tmp_path: pathlib.Path, **parameters) -> dict:
  """Runs notebooks/<name> in a kernel with `parameters`; returns the executed notebook JSON."""
  out = tmp_path / f"executed_{name}"
  env_before = os.environ.get("PYDEVD_DISABLE_FILE_VALIDATION")
  os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # the kernel's debugger warns otherwise
  try:
    papermill.execute_notebook(str(NOTEBOOK_DIR / name), str(out), parameters=parameters,
                               kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
                               log_output=False, execution_timeout=600)
  except papermill.PapermillExecutionError as e:
    pytest.fail(f"{name} cell {e.exec_count} raised {e.ename}: {e.evalue}\n"
                f"{''.join(e.traceback)[-3000:]}")
  finally:
    if env_before is None:
      os.environ.pop("PYDEVD_DISABLE_FILE_VALIDATION", None)
  return json.loads(out.read_text())


def _outputs(nb: dict) -> tuple[str, int]:
  """(all text printed by the code cells, the number of PNG images displayed)."""
  text, images = [], 0
  for cell in nb["cells"]:
    for output in cell.get("outputs", []):
      if output["output_type"] == "stream":
        text.append("".join(output["text"]))
      elif "data" in output:
        images += "image/png" in output["data"]
        text.append("".join(output["data"].get("text/plain", "")))
  return "\n".join(text), images


def test_every_notebook_has_a_test_and_opens_with_a_colab_cell():
  assert NOTEBOOKS == ["evaluate_checkpoint.ipynb", "lora_7b.ipynb", "quickstart.ipynb",
                       "train_and_compare.ipynb"]
  for name in NOTEBOOKS:
    cells = json.loads((NOTEBOOK_DIR / name).read_text())["cells"]
    first = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    assert 'if "google.colab" in sys.modules:' in first, name
    # Everything that installs or clones sits under the Colab guard.
    assert all(line.startswith("    ") for line in first.splitlines() if "!" in line), name


def test_quickstart(tmp_path):
  text, _ = _outputs(_execute("quickstart.ipynb", tmp_path))
  assert "prompt tokens," in text and "'total'" in text


# ~70 s on 2 cores: three trainings and a sweep, compiled in the kernel
def test_train_and_compare(tmp_path):
  nb = _execute("train_and_compare.ipynb", tmp_path, workdir="run", overrides=TRAIN_OVERRIDES,
                num_chains=2, chain_budget=8)
  text, images = _outputs(nb)
  assert "SFT loss" in text and "after 4 steps" in text
  for name, workdir in (("sft", "sft"), ("outcome", "outcome_s0"), ("cesar", "cesar_s0")):
    assert f"{name} " in text and (tmp_path / "run" / workdir / "checkpoints").is_dir()
  assert (tmp_path / "run" / "report.md").is_file()
  # Two reward figures, then the sweep's scaling, slopes and perception figures.
  assert images >= 4, images
  assert text.count("think tokens, correct") == 4  # 2 items x 2 chains
  assert "rewards accuracy" in text and "overthinking" in text


def test_evaluate_checkpoint_on_a_hf_folder(tmp_path):
  from cesar_jax import model_store
  from cesar_jax import tokenizers as tok_lib
  from cesar_jax.checkpoints import hf
  tok = tok_lib.Tokenizer.builtin()
  cfg = model_store.resolve_model_config({"preset": "tiny", "max_source_positions": 100}, tok)
  hf.save(model_store.init_model(cfg, seed=0), tmp_path / "hf_tiny")
  nb = _execute("evaluate_checkpoint.ipynb", tmp_path, checkpoint=str(tmp_path / "hf_tiny"),
                num_items=4, workdir="ev", overrides=EVAL_OVERRIDES, num_chains=4)
  text, images = _outputs(nb)
  assert "n_mels 128, 2.0 s window" in text  # the front end matched the tiny encoder
  assert "hf_tiny: accuracy by budget" in text
  report = json.loads((tmp_path / "ev" / "report.json").read_text())
  assert report["models"]["hf_tiny"]["budgets"] == [0, 8]
  assert images == len(report["figures"]) >= 2
  assert text.count("think tokens, correct") == 8  # 4 items x 2 chains (the sweep's shapes)


# The 7B LoRA recipe shrunk to a tiny random checkpoint: 2 GRPO steps on 1 prompt x 2 samples.
LORA_OVERRIDES = {
    "data.question_types": ["count_beeps"], "data.synthetic.clip_seconds": 2.0,
    "data.num_examples": 8, "data.buckets": [192], "data.batch_size": 1, "data.worker_count": 0,
    "sampling.num_samples": 2, "sampling.max_new_tokens": 16, "grpo.grad_accum_steps": 1,
    "lora.rank": 4, "lora.alpha": 8.0, "optim.warmup_steps": 1, "model.dtype": "float32",
    "log_every": 1, "checkpoint_every": 1, "mesh.shape": [1, -1, 1],  # the recipe has tensor 8
}


def test_lora_7b_on_a_tiny_random_checkpoint(tmp_path):
  from cesar_jax import model_store
  from cesar_jax import tokenizers as tok_lib
  from cesar_jax.checkpoints import hf
  tok = tok_lib.Tokenizer.builtin()
  cfg = model_store.resolve_model_config({"preset": "tiny", "max_source_positions": 100}, tok)
  ckpt = tmp_path / "hf_tiny"
  hf.save(model_store.init_model(cfg, seed=0), ckpt)
  (ckpt / "tokenizer.json").write_text(tok.backend.to_str(pretty=False))
  nb = _execute("lora_7b.ipynb", tmp_path, checkpoint=str(ckpt), workdir="run", steps=2,
                overrides=LORA_OVERRIDES, export_dir="export")
  text, images = _outputs(nb)
  assert "LoRA rank 4, alpha 8.0" in text and "2 steps; reward/total" in text and images == 1
  assert "adapters: " in text and "%)" in text
  assert (tmp_path / "export" / "config.json").is_file()
  assert (tmp_path / "export" / "adapters" / "adapters.safetensors").is_file()
  # The run checkpointed the adapters alone.
  meta = json.loads((tmp_path / "run" / "checkpoints" / "1" / "state" / "_METADATA").read_text())
  assert all("lora" in k for k in meta["tree_metadata"] if k.startswith("('params'"))
