#!/usr/bin/env bash
# The test suite: sets itself up (bootstrap + test tools), then runs every package's tests and the
# cross-package tests in one pytest run. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/bootstrap.sh
if command -v uv >/dev/null 2>&1; then
  uv pip install -q --python .venv/bin/python -c constraints/cpu.txt -r tools/requirements-test.txt
else
  .venv/bin/python -m pip install -q -c constraints/cpu.txt -r tools/requirements-test.txt
fi
exec .venv/bin/python -m pytest "$@"
