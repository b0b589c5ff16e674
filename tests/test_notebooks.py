"""The notebooks run: their code cells, executed in order, against the package (no Jupyter needed)."""

import json
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_cells_run(path, monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  cells = json.loads(path.read_text())["cells"]
  namespace: dict = {}
  for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
    # Shell escapes (`!pip ...`) are for Colab only.
    source = "".join(line for line in cell["source"] if not line.lstrip().startswith("!"))
    try:
      exec(compile(source, f"{path.name}[cell {i}]", "exec"), namespace)  # pylint: disable=exec-used
    except Exception as e:  # pylint: disable=broad-except
      pytest.fail(f"{path.name} code cell {i} raised {type(e).__name__}: {e}")
  assert "out" in namespace and len(namespace["out"].texts(namespace["tok"])) == 4
