#!/usr/bin/env bash
# Every GPU check the issues name, in one command, on a CUDA machine, from the repository root:
#     bash benchmarks/gpu.sh            # all of them (about 25 minutes on an H100)
#     bash benchmarks/gpu.sh memory     # or some: tests memory precision throughput
# The library needs no install there (PYTHONPATH=src); fastai, for the throughput comparison and the CUDA cases of
# tests/training/test_fastai_pixel_parity.py (part `tests`; skipped without it), comes as wheels in .whl/
# (docs/performance.md says how to download them). Results: benchmarks/results/*.json, and copies under $OUT if set.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:src"
else
  export PYTHONPATH="src"
fi
export PYTHONUNBUFFERED=1 PADDY_CACHE="${PADDY_CACHE:-/tmp/paddy-cache}"
parts=("${@:-tests memory precision throughput}")
status=0
for part in ${parts[@]}; do
  echo "=== $part ==="
  case "$part" in
    tests) python3 -m pytest -m gpu -q -p no:cacheprovider $(grep -rl --include="test_*.py" "mark.gpu" tests) || status=1 ;;
    memory) python3 benchmarks/memory_gpu.py || status=1 ;;
    precision) python3 benchmarks/precision.py --device cuda || status=1 ;;
    throughput) python3 benchmarks/throughput.py || status=1 ;;
    *) echo "unknown part $part (tests, memory, precision, throughput)"; status=2 ;;
  esac
done
if [ -n "${OUT:-}" ]; then cp benchmarks/results/*.json "$OUT"/ 2>/dev/null; fi
exit $status
