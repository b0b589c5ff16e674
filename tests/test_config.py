"""Config argument parsing and the entry point's handling of unknown keys."""

import subprocess
import sys

import pytest

from cesar_jax import config as config_lib


def test_parse_arg_types_and_unknown_keys():
  arg = config_lib.parse_arg("steps=20,model=small,fast=false,lr=0.5", steps=10, model="tiny",
                             fast=True, lr=1.0)
  assert (arg.steps, arg.model, arg.fast, arg.lr) == (20, "small", False, 0.5)
  with pytest.raises(KeyError, match="unknown config arg 'stpes'"):
    config_lib.parse_arg("stpes=3", steps=10)
  with pytest.raises(ValueError, match="expected int"):
    config_lib.parse_arg("steps=many", steps=10)
  with pytest.raises(ValueError, match="not key=value"):
    config_lib.parse_arg("steps", steps=10)
