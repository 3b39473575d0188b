#!/usr/bin/env bash
# GPU check (see benchmarks/gpu_check.py): embed images/s on CUDA split into host decode, GPU decode,
# model only and end to end; a `dvc repro` of the sample with embed.precision auto; its metrics
# against the committed CPU run within CI's tolerance; one table. Run from anywhere:
#     bash benchmarks/gpu_check.sh                # on a CUDA machine (about 5-10 min)
#     bash benchmarks/gpu_check.sh --allow-cpu --no-repro --images 64   # checks the script without a GPU
# Without CUDA (and without --allow-cpu) it stops with one line and exit status 2.
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
[ -d ../shared/datasets ] || { echo "gpu_check: error: the sample is missing: expected ../shared/datasets beside the repo" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec python benchmarks/gpu_check.py "$@"
