"""The quiet console: orbax/absl INFO goes to WORKDIR/log.txt; warnings and prints still show.

The end-to-end tests run `cesar_jax.main` in a subprocess (absl parses the real command line)
with a tiny job that saves two orbax checkpoints and writes two metrics lines.
"""

import os
import pathlib
import re
import subprocess
import sys
import textwrap
import types

from absl import logging
import pytest

from cesar_jax import logs

ROOT = pathlib.Path(__file__).resolve().parents[1]
INFO_LINE = re.compile(r"^I\d{4} ", re.M)  # absl's INFO prefix: I<mmdd> <time> ...
ORBAX_INFO = re.compile(r"^I\d{4} .*checkpoint_manager\.py", re.M)

DRIVER = textwrap.dedent("""
    from absl import app, logging
    from cesar_jax import main
    from cesar_jax import metrics as metrics_lib
    from cesar_jax.checkpoints import manager
    import jax.numpy as jnp

    def run(config, workdir):
      with manager.CheckpointManager(workdir, save_interval_steps=1) as ckpt:
        for step in range(2):
          ckpt.save(step, {"w": jnp.full((3,), float(step))})
      with metrics_lib.MetricsWriter(workdir, total_steps=2, tensorboard=False) as writer:
        for step in range(2):
          writer.write(step, {"loss": 1.0 / (step + 1)})
      logging.warning("a warning the console must show")
      print("the result line")

    main.JOBS["tiny"] = "__main__:run"
    app.run(main.main)
    """)
CONFIG = textwrap.dedent("""
    import ml_collections
    def get_config():
      config = ml_collections.ConfigDict()
      config.job = "tiny"
      return config
    """)


def _run_main(tmp_path, *flags):
  (tmp_path / "driver.py").write_text(DRIVER)
  (tmp_path / "tiny_config.py").write_text(CONFIG)
  workdir = tmp_path / "run"
  # JAX_PLATFORMS unset: jax then tries the TPU backend and logs at INFO when there is none,
  # a line the quiet console must not show either.
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
  proc = subprocess.run(
      [sys.executable, str(tmp_path / "driver.py"), f"--config={tmp_path / 'tiny_config.py'}",
       f"--workdir={workdir}", *flags],
      capture_output=True, text=True, env=env, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout + proc.stderr, workdir


def test_default_console_is_quiet_and_the_log_file_has_the_info(tmp_path):
  console, workdir = _run_main(tmp_path)
  assert not INFO_LINE.search(console), console[:3000]
  assert "step 0/2 | loss 1" in console and "step 1/2 | loss 0.5" in console
  assert "the result line" in console
  assert re.search(r"^W\d{4} .*a warning the console must show", console, re.M)
  log = (workdir / "log.txt").read_text()
  assert len(ORBAX_INFO.findall(log)) >= 2, log[:2000]
  assert "a warning the console must show" in log
  assert (workdir / "checkpoints" / "1").is_dir()


def test_verbosity_brings_the_info_back_to_the_console(tmp_path):
  console, workdir = _run_main(tmp_path, "--verbosity=0")
  assert len(ORBAX_INFO.findall(console)) >= 2, console[:3000]
  # The file still gets them.
  assert len(ORBAX_INFO.findall((workdir / "log.txt").read_text())) >= 2


def test_setup_in_process_splits_file_and_console_and_close_restores(tmp_path, capsys):
  handler = logging.get_absl_handler().python_handler
  before_stream, before_level = handler.stream, logging.get_verbosity()
  logging.set_verbosity(logging.INFO)
  try:
    log = logs.setup(tmp_path / "wd")
    assert log.path == tmp_path / "wd" / "log.txt" and log.threshold == "warning"
    logging.info("an info line")
    logging.warning("a warning line")
    log.close()
    logging.info("after close")
  finally:
    logging.set_verbosity(before_level)
  assert handler.stream is before_stream
  text = (tmp_path / "wd" / "log.txt").read_text()
  assert "an info line" in text and "a warning line" in text and "after close" not in text
  err = capsys.readouterr().err
  assert "a warning line" in err and "an info line" not in err


def test_log_names_and_console_thresholds():
  assert logs.log_name(0, 1) == logs.log_name(0, 4) == "log.txt"
  assert logs.log_name(3, 4) == "log.process_3.txt"
  assert logs.console_threshold(None) == "warning"
  assert [logs.console_threshold(v) for v in (2, 1, 0, -1, -2, -5)] == [
      "debug", "debug", "info", "warning", "error", "fatal"]


def test_setup_needs_parsed_flags(monkeypatch, tmp_path):
  unparsed = types.SimpleNamespace(FLAGS=types.SimpleNamespace(is_parsed=lambda: False))
  monkeypatch.setattr(logs, "flags", unparsed)
  with pytest.raises(RuntimeError, match="absl flags are not parsed"):
    logs.setup(tmp_path)
