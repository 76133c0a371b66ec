#!/usr/bin/env bash
# Install marl-offline-bench with torch's CPU build. `--test` adds the test extra.
# torch is installed first, pinned to the CPU wheel, so that resolving the package's own
# `torch>=2.2,<2.15` range keeps it instead of pulling a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
if ! python -c "import torch" 2>/dev/null; then
  # Where no CPU wheel is cached locally, add: --index-url https://download.pytorch.org/whl/cpu
  python -m pip install --quiet "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
python -m pip install --quiet -e ".${extra}"
