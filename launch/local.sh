#!/usr/bin/env bash
# Train on this machine: one process, or NUM_PROCESSES local processes that form one JAX
# cluster through a coordinator on localhost (explicit jax.distributed.initialize; on CPU
# each process gets DEVICES_PER_PROCESS simulated devices).
#
#   launch/local.sh configs/scar.py:variant=mu,runlocal,text=random-tiny /tmp/scar_run
#   launch/local.sh configs/scar.py:variant=tiny /data/runs/scar --config.total_steps=5000
#   NUM_PROCESSES=2 DEVICES_PER_PROCESS=4 launch/local.sh configs/scar.py:runlocal /tmp/run2
#
# Re-running the same command on the same workdir resumes from its last complete
# checkpoint. Extra arguments go to `python -m scar_jax.main train`.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 <config[:arg]> <workdir> [--config.<leaf>=<value> ...]" >&2
  exit 2
fi
CONFIG=$1
WORKDIR=$2
shift 2
PYTHON=${PYTHON:-python}
NUM_PROCESSES=${NUM_PROCESSES:-1}
cd "$(dirname "$0")/.."

if [[ "$NUM_PROCESSES" -le 1 ]]; then
  exec "$PYTHON" -m scar_jax.main train --config="$CONFIG" --workdir="$WORKDIR" "$@"
fi

PORT=${COORDINATOR_PORT:-$((20000 + RANDOM % 20000))}
if [[ -n "${DEVICES_PER_PROCESS:-}" ]]; then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$DEVICES_PER_PROCESS"
fi
mkdir -p "$WORKDIR"
pids=()
for ((i = 0; i < NUM_PROCESSES; i++)); do
  JAX_COORDINATOR_ADDRESS="localhost:$PORT" JAX_NUM_PROCESSES="$NUM_PROCESSES" \
    JAX_PROCESS_ID="$i" \
    "$PYTHON" -m scar_jax.main train --config="$CONFIG" --workdir="$WORKDIR" "$@" \
    > "$WORKDIR/process_$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
echo "processes finished (exit $status); logs in $WORKDIR/process_*.log" >&2
exit $status
