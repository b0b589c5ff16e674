#!/usr/bin/env bash
# Run a config on every worker of a Cloud TPU VM pod slice (jax.distributed finds its peers).
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG[:ARG] WORKDIR [overrides...]
# WORKDIR should be a gs:// path (orbax and the metrics writers write there from every host).
# The repo is copied to each worker and installed with the TPU build of jax.
set -euo pipefail
tpu=${1:?usage}; zone=${2:?usage}; config=${3:?usage}; workdir=${4:?usage}
shift 4
cd "$(dirname "$0")/.."
gcloud compute tpus tpu-vm scp --recurse --zone="$zone" --worker=all . "$tpu":~/cesar_jax
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="
  set -e; cd ~/cesar_jax
  python3 -m venv .venv && .venv/bin/pip install -q -e . 'jax[tpu]' \
    -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  .venv/bin/python -m cesar_jax.main --config='$config' --workdir='$workdir' $*"
