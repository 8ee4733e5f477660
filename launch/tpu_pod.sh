#!/usr/bin/env bash
# Train on every host of a Cloud TPU VM pod slice.
#
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.a.b=value ...]
#
# e.g.
#   launch/tpu_pod.sh my-v4-32 us-central2-b experiments/configs/prnet_pretrain.py \
#       /gcs/my-bucket/runs/prnet --config.data.dir=/data/300wlp
#
# Runs `jaxface train` on all workers at once (gcloud --worker=all) with
# JAXFACE_DISTRIBUTED=1, so that each process calls
# jax.distributed.initialize() (on TPU VMs it finds the coordinator itself),
# reads its own share of the data and contributes its slice of the global
# batch. WORKDIR must be a directory all hosts share (an NFS / Filestore
# mount, or a bucket mounted with gcsfuse): orbax writes the checkpoints
# from all processes, process 0 the metrics, figures and summary. The dataset path must exist on every host.
# Install jaxface on the workers first with launch/tpu_setup.sh.
# DRY_RUN=1 prints the gcloud command instead of running it.
set -euo pipefail

if [[ $# -lt 4 ]]; then
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
TPU_NAME=$1 ZONE=$2 CONFIG=$3 WORKDIR=$4
shift 4
REMOTE_DIR=${JAXFACE_REMOTE_DIR:-jaxface}

printf -v OVERRIDES ' %q' "$@"
REMOTE="cd ${REMOTE_DIR} && JAXFACE_DISTRIBUTED=1 .venv/bin/jaxface train \
--config $(printf %q "$CONFIG") --workdir $(printf %q "$WORKDIR")${OVERRIDES} \
--config.train.progress=False"
CMD=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all
     --command "$REMOTE")

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${CMD[@]}"; echo
else
  "${CMD[@]}"
fi
