#!/bin/sh
# The GPU check from anywhere: bench/gpu_check.sh --data-dir ../shared/data (see bench/gpu_check.py).
cd "$(dirname "$0")/.." && exec python -m bench.gpu_check "$@"
