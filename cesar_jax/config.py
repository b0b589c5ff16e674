"""Config helpers: `get_config(arg)` argument parsing (big_vision style) and config I/O.

A config file under `configs/` exposes `get_config(arg: str | None) -> ConfigDict`. `arg` is the
text after the colon in `--config=configs/X.py:arg`, a comma-separated list of `key=value`
pairs, parsed against declared defaults so that a typo is an error naming the key:

    def get_config(arg=None):
      arg = config_lib.parse_arg(arg, steps=200, model="tiny")
      ...
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
from etils import epath


def _convert(key: str, text: str, default: Any) -> Any:
  if isinstance(default, bool):
    if text.lower() in ("1", "true", "yes", "on"):
      return True
    if text.lower() in ("0", "false", "no", "off"):
      return False
    raise ValueError(f"config arg {key}={text!r}: expected a boolean")
  if default is None or isinstance(default, str):
    return text
  try:
    return type(default)(text)
  except ValueError as e:
    raise ValueError(f"config arg {key}={text!r}: expected {type(default).__name__}") from e


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses `key=value,key=value` against `defaults`; an unknown key is an error naming it."""
  values = dict(defaults)
  for pair in filter(None, (p.strip() for p in (arg or "").split(","))):
    key, sep, text = pair.partition("=")
    key = key.strip()
    if not sep:
      raise ValueError(f"config arg {pair!r} is not key=value")
    if key not in defaults:
      raise KeyError(f"unknown config arg {key!r}; known: {', '.join(sorted(defaults))}")
    values[key] = _convert(key, text.strip(), defaults[key])
  return ml_collections.ConfigDict(values)


def workdir_path(workdir: str | os.PathLike) -> epath.Path:
  """A workdir as given: a URI (`gs://bucket/run`) stays a URI; a local path becomes absolute.

  All workdir I/O goes through `etils.epath` (as orbax's does), so the same code writes to a
  local folder or a bucket.
  """
  text = os.fspath(workdir)
  if "://" in text:
    return epath.Path(text)
  return epath.Path(os.path.abspath(text))


def save(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> epath.Path:
  """Writes the resolved config to `workdir/config.json` (what the run depended on)."""
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / "config.json"
  path.write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
  return path


def load(path: str | os.PathLike) -> ml_collections.ConfigDict:
  """Reads a config written by `save` (a workdir or its config.json)."""
  path = epath.Path(path)
  if path.is_dir():
    path = path / "config.json"
  return ml_collections.ConfigDict(json.loads(path.read_text()))
