#!/usr/bin/env bash
# The test suite: sets itself up (bootstrap + test tools), then runs each package's tests and the
# cross-package tests. Extra arguments go to every pytest run.
#
# One pytest process per package, as each package is installed and used on its own: in a shared
# process, megatron's checkpoint writer (which forks) was seen to hang after other packages'
# tests had started threads (tokenizers, datatrove) in that process.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/bootstrap.sh || exit 1
if command -v uv >/dev/null 2>&1; then
  uv pip install -q --python .venv/bin/python -c constraints/cpu.txt -r tools/requirements-test.txt || exit 1
else
  .venv/bin/python -m pip install -q -c constraints/cpu.txt -r tools/requirements-test.txt || exit 1
fi
status=0
for suite in packages/core/tests packages/data/tests packages/pretrain/tests tests; do
  echo "=== pytest $suite"
  .venv/bin/python -m pytest "$suite" "$@" || status=1
done
exit $status
