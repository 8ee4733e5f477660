#!/usr/bin/env bash
# Train on one multi-GPU node: one process drives all visible GPUs, the
# batch is sharded over them (CUDA_VISIBLE_DEVICES picks a subset).
#
#   launch/gpu_node.sh CONFIG WORKDIR [--config.a.b=value ...]
#
# The global batch size must be divisible by the number of GPUs.
# DRY_RUN=1 prints the command.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
CONFIG=$1 WORKDIR=$2
shift 2
# XLA's default preallocates 75 % of GPU memory per process; one process
# per node can have it all.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
CMD=(jaxface train --config "$CONFIG" --workdir "$WORKDIR" "$@")

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${CMD[@]}"; echo
else
  exec "${CMD[@]}"
fi
