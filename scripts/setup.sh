#!/usr/bin/env bash
# One-time set-up of a virtual environment in .venv (idempotent; fast when already done).
# torch is installed first and pinned to the CPU wheel 2.13.0 so that no CUDA build is pulled in.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -e ".[test,space,export]"
bash scripts/setup_browser.sh || echo "setup.sh: no Chromium; the browser test will skip (CI makes it fail)" >&2  # for tests/test_space.py
