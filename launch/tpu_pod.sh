#!/usr/bin/env bash
# SCAR on a Cloud TPU VM slice: create it, install scar_jax on every worker, train on all
# workers at once (jax.distributed.initialize() finds the other workers by itself), delete.
#
#   export TPU_NAME=scar-v5p ZONE=us-east5-a ACCELERATOR=v5p-32 PROJECT=my-project
#   launch/tpu_pod.sh create
#   launch/tpu_pod.sh setup                       # copies this checkout, launch/setup_worker.sh
#   launch/tpu_pod.sh data gs://my-bucket/tfds    # copy the built TFDS folder to every worker
#   launch/tpu_pod.sh train configs/mimic.py gs://my-bucket/runs/mimic_scar
#   launch/tpu_pod.sh delete
#
# `setup` copies this checkout (with a text-tower folder such as MedCPT-Query-Encoder/ in it,
# see configs/mimic.py) and runs launch/setup_worker.sh on every worker: it finds or installs
# (with uv) the Python setup.cfg pins, then pip installs .[tpu]. DRY_RUN=1 prints every
# command (gcloud, tar) instead of running it.
#
# The workdir is a gs:// path (orbax writes checkpoints there directly; metrics.jsonl is
# written by worker 0). The data is read from local disk (/tmp/tfds on every worker,
# `data` copies it there): ArrayRecord random access over gs:// is slow. Preemption
# (SIGTERM from the TPU maintenance events) saves a checkpoint; running `train` again with
# the same workdir resumes. Spot/preemptible capacity: set SPOT=1 before `create`.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
ACCELERATOR=${ACCELERATOR:-v5p-32}
RUNTIME=${RUNTIME:-v2-alpha-tpuv5}
REMOTE_DIR=${REMOTE_DIR:-scar_jax}
LOCAL_DATA=${LOCAL_DATA:-/tmp/tfds}
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}

run() {  # a command, or its echo under DRY_RUN
  if [[ -n "${DRY_RUN:-}" ]]; then echo "+ $*"; else "$@"; fi
}

on_all() {  # run a command on every worker of the slice
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker=all \
    --command="$1"
}

cmd=${1:-}
shift || true
case "$cmd" in
  create)
    run gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG \
      --accelerator-type="$ACCELERATOR" --version="$RUNTIME" ${SPOT:+--spot}
    ;;
  setup)
    cd "$(dirname "$0")/.."
    run tar czf /tmp/scar_jax_src.tgz --exclude=.venv --exclude=.git --exclude='*.pyc' .
    run gcloud compute tpus tpu-vm scp /tmp/scar_jax_src.tgz "$TPU_NAME":scar_jax_src.tgz \
      --zone="$ZONE" $PROJECT_FLAG --worker=all
    on_all "set -e; mkdir -p $REMOTE_DIR && tar xzf scar_jax_src.tgz -C $REMOTE_DIR \
      && cd $REMOTE_DIR && bash launch/setup_worker.sh tpu"
    ;;
  data)
    SRC=${1:?usage: $0 data gs://bucket/tfds}
    on_all "mkdir -p $LOCAL_DATA && gcloud storage cp -r '$SRC/*' $LOCAL_DATA/"
    ;;
  train)
    CONFIG=${1:?usage: $0 train <config[:arg]> <gs://workdir> [overrides]}
    WORKDIR=${2:?usage: $0 train <config[:arg]> <gs://workdir> [overrides]}
    shift 2
    # One process per worker, all started together; each sees its local TPU chips.
    on_all "cd $REMOTE_DIR && TFDS_DATA_DIR=$LOCAL_DATA .venv/bin/python -m scar_jax.main train \
      --config='$CONFIG' --workdir='$WORKDIR' --config.input.data_dir=$LOCAL_DATA $* \
      2>&1 | tee -a train_\$(hostname).log"
    ;;
  delete)
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --quiet
    ;;
  *)
    echo "usage: $0 create|setup|data <gs://tfds>|train <config> <gs://workdir> [overrides]|delete" >&2
    exit 2
    ;;
esac
