#!/usr/bin/env bash
# Run one config on this machine: launch/local.sh configs/X.py[:arg] WORKDIR [--config.a.b=v ...]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: launch/local.sh CONFIG[:ARG] WORKDIR [overrides...]}
workdir=${2:?usage: launch/local.sh CONFIG[:ARG] WORKDIR [overrides...]}
shift 2
exec .venv/bin/python -m cesar_jax.main --config="$config" --workdir="$workdir" "$@"
