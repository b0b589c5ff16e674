"""Cloud workdirs: a `gs://` workdir reaches every writer as the URI it is, through etils.epath.

No bucket is reachable from the test machines, so fsspec's in-memory filesystem is registered
under the `gcs` protocol, the one epath's fsspec backend (the one used without TensorFlow) opens
for `gs://` paths; what the writers put there is read back through it. The same writers on local
paths are covered by their own tests (tests/test_metrics.py, tests/test_sft.py, ...).
"""

import os
import pathlib

import fsspec
import ml_collections
import pytest
from etils import epath
from fsspec.implementations import memory

from cesar_jax import config as config_lib
from cesar_jax import metrics as metrics_lib
from cesar_jax import model_store
from cesar_jax.models import preset
from cesar_jax.tokenizers import Tokenizer

URI = "gs://bucket/runs/exp1"


class _InMemoryGcs(memory.MemoryFileSystem):
  """The in-memory filesystem, under gcsfs's protocol names (and its constructor argument)."""
  protocol = ("gs", "gcs")

  def __init__(self, *args, finalize_on_close=True, **kwargs):
    del finalize_on_close
    super().__init__(*args, **kwargs)


def _stored(path: str) -> bool:
  return path in memory.MemoryFileSystem.store


def _listing(prefix: str) -> list[str]:
  return [k for k in memory.MemoryFileSystem.store if k.startswith(prefix)]


@pytest.fixture()
def bucket(monkeypatch, tmp_path):
  fsspec.register_implementation("gcs", _InMemoryGcs, clobber=True)
  fsspec.register_implementation("gs", _InMemoryGcs, clobber=True)
  epath.backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  memory.MemoryFileSystem.store.clear()
  memory.MemoryFileSystem.pseudo_dirs[:] = [""]
  monkeypatch.chdir(tmp_path)  # a writer that made the URI a local path would write here
  yield _InMemoryGcs()
  assert not any(tmp_path.iterdir()), f"local files written: {list(tmp_path.iterdir())}"
  memory.MemoryFileSystem.store.clear()
  epath.backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access


def test_workdir_path_keeps_uris_and_makes_local_paths_absolute(tmp_path, monkeypatch):
  assert str(config_lib.workdir_path(URI)) == URI
  monkeypatch.chdir(tmp_path)
  assert str(config_lib.workdir_path("runs/a")) == str(tmp_path / "runs" / "a")


def test_config_and_run_files_go_to_the_bucket(bucket):
  config = ml_collections.ConfigDict({"job": "sft", "seed": 3})
  path = config_lib.save(config, URI)
  assert str(path) == f"{URI}/config.json"
  assert _stored(f"{URI}/config.json")
  assert config_lib.load(URI).seed == 3

  tok = Tokenizer.builtin()
  cfg = preset("tiny", vocab_size=tok.vocab_size, audio_token_id=tok.audio_id)
  model_store.write_run_files(URI, cfg, tok)
  assert _stored(f"{URI}/model_config.json") and _stored(f"{URI}/tokenizer.json")
  assert model_store.read_model_config(URI) == cfg
  assert model_store.load_tokenizer("", URI).vocab_size == tok.vocab_size
  assert not model_store.is_run_workdir(URI)  # no checkpoints/ yet
  (epath.Path(URI) / "checkpoints").mkdir()
  assert model_store.is_run_workdir(URI)


def test_metrics_jsonl_and_tensorboard_events_go_to_the_bucket(bucket):
  with metrics_lib.MetricsWriter(URI, total_steps=3, progress=False, console_every=0) as w:
    for step in range(3):
      w.write(step, {"loss": 1.0 / (step + 1)})
  rows = metrics_lib.read_jsonl(f"{URI}/{metrics_lib.JSONL_NAME}")
  assert [r["step"] for r in rows] == [0, 1, 2]
  events = _listing(f"{URI}/{metrics_lib.TENSORBOARD_DIR}/")
  assert events and all("tfevents" in e for e in events)
  scalars = metrics_lib.read_tensorboard_scalars(f"{URI}/{metrics_lib.TENSORBOARD_DIR}")
  assert [s for s, _ in scalars["loss"]] == [0, 1, 2]
  # Resuming after step 1 keeps steps 0-1 and appends anew, as on a local disk.
  with metrics_lib.MetricsWriter(URI, total_steps=3, resume_step=1, progress=False,
                                 console_every=0, tensorboard=False) as w:
    w.write(2, {"loss": 0.25})
  rows = metrics_lib.read_jsonl(f"{URI}/{metrics_lib.JSONL_NAME}")
  assert [(r["step"], r["loss"]) for r in rows] == [(0, 1.0), (1, 0.5), (2, 0.25)]


def test_main_passes_the_uri_on_unchanged():
  """cesar_jax.main hands jobs `config_lib.workdir_path(--workdir)`: no os.path.abspath."""
  source = pathlib.Path(config_lib.__file__).with_name("main.py").read_text()
  assert "abspath" not in source and "workdir_path(_WORKDIR.value)" in source
  assert os.fspath(config_lib.workdir_path(URI)) == URI
