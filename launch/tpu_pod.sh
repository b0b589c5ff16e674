#!/usr/bin/env bash
# Run a config on every worker of a Cloud TPU VM pod slice (jax.distributed finds its peers).
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG[:ARG] WORKDIR [overrides...]
# WORKDIR should be a gs:// path: it is used as given (config, metrics, TensorBoard, reports and
# the model store go through etils.epath -> gcsfs; orbax writes every host's shards there).
# The repo is copied to each worker and installed with its [tpu] extra (libtpu, gcsfs).
set -euo pipefail
tpu=${1:?usage}; zone=${2:?usage}; config=${3:?usage}; workdir=${4:?usage}
shift 4
cd "$(dirname "$0")/.."
gcloud compute tpus tpu-vm scp --recurse --zone="$zone" --worker=all . "$tpu":~/cesar_jax
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="
  set -e; cd ~/cesar_jax
  python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'
  .venv/bin/python -m cesar_jax.main --config='$config' --workdir='$workdir' $*"
