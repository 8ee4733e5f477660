#!/usr/bin/env bash
# Install jaxface (with JAX's TPU build) on every worker of a TPU VM.
#
#   launch/tpu_setup.sh TPU_NAME ZONE [GIT_URL] [GIT_REF]
#
# Clones GIT_URL (default: this checkout's origin) at GIT_REF (default: the
# current commit) into ~/jaxface on each worker and installs it into
# ~/jaxface/.venv with the `tpu` extra. DRY_RUN=1 prints the command.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
TPU_NAME=$1 ZONE=$2
HERE=$(cd "$(dirname "$0")/.." && pwd)
GIT_URL=${3:-$(git -C "$HERE" remote get-url origin)}
GIT_REF=${4:-$(git -C "$HERE" rev-parse HEAD)}

REMOTE="set -e; rm -rf jaxface; git clone -q $(printf %q "$GIT_URL") jaxface \
&& cd jaxface && git checkout -q $(printf %q "$GIT_REF") \
&& python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'"
CMD=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all
     --command "$REMOTE")

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${CMD[@]}"; echo
else
  "${CMD[@]}"
fi
