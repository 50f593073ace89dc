#!/usr/bin/env bash
# Set up this checkout on a fresh machine: .venv holds the `main` environment (every stage that
# can share pins, and the `fullchain` CLI itself), built from the packages' own pyproject files
# with torch held to its CPU build (constraints/cpu.txt). Idempotent: a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v uv >/dev/null 2>&1; then
  "$PY" -m pip install -q "uv==0.13.9" || true
fi
# uv ignores PIP_FIND_LINKS; this machine ships the CPU torch wheel there (see FINDINGS.md).
if [ -n "${PIP_FIND_LINKS:-}" ] && [ -z "${UV_FIND_LINKS:-}" ]; then export UV_FIND_LINKS="$PIP_FIND_LINKS"; fi
if command -v uv >/dev/null 2>&1; then
  [ -x .venv/bin/python ] || uv venv -q --python "$PY" .venv
  uv pip install -q --python .venv/bin/python -c constraints/cpu.txt -e "packages/core[slurm]"
else
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q -c constraints/cpu.txt -e "packages/core[slurm]"
fi
# The rest of the main environment, as conf/env/local.yaml declares it.
.venv/bin/fullchain env sync main
