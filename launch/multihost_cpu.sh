#!/usr/bin/env bash
# Several CPU processes on loopback, each with its own fake devices: the multi-host code path
# (jax.distributed, per-host data shards, global arrays) without a pod.
#   launch/multihost_cpu.sh NUM_PROCESSES DEVICES_PER_PROCESS CONFIG[:ARG] WORKDIR [overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage}; local_devices=${2:?usage}; config=${3:?usage}; workdir=${4:?usage}
shift 4
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pids=()
for ((i = 0; i < n; i++)); do
  CESAR_COORDINATOR="127.0.0.1:$port" CESAR_NUM_PROCESSES="$n" CESAR_PROCESS_ID="$i" \
  CESAR_LOCAL_CPU_DEVICES="$local_devices" JAX_PLATFORMS=cpu \
    .venv/bin/python -m cesar_jax.main --config="$config" --workdir="$workdir" "$@" \
    > "${workdir%/}.process$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
echo "logs: ${workdir%/}.process*.log"
exit $status
