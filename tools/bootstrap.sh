#!/usr/bin/env bash
# Set up this checkout on a fresh machine: .venv holds the `main` environment (every stage that
# can share pins, and the `fullchain` CLI itself), built from the packages' own pyproject files
# with torch held to its CPU build (constraints/cpu.txt). Idempotent: a second run is quick.
# Prints one line per environment (what, how long); the installers' output only on failure, or
# with -v (bash tools/bootstrap.sh -v).
set -euo pipefail
cd "$(dirname "$0")/.."
VERBOSE=""
[ "${1:-}" = "-v" ] && VERBOSE="-v"
PY=${PYTHON:-python3}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
quiet() {  # run "$@"; its output goes to the terminal with -v, else only when it fails
  if [ -n "$VERBOSE" ]; then "$@"; return; fi
  if ! "$@" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "bootstrap: failed: $*" >&2
    return 1
  fi
}
if ! command -v uv >/dev/null 2>&1; then
  quiet "$PY" -m pip install "uv==0.13.9" || true
fi
# uv ignores PIP_FIND_LINKS; where a machine ships local wheels there (the CPU torch build), uv
# must be pointed at them too or it resolves torch to a multi-GB CUDA build.
if [ -n "${PIP_FIND_LINKS:-}" ] && [ -z "${UV_FIND_LINKS:-}" ]; then export UV_FIND_LINKS="$PIP_FIND_LINKS"; fi
started=$SECONDS
if command -v uv >/dev/null 2>&1; then
  [ -x .venv/bin/python ] || quiet uv venv --python "$PY" .venv
  quiet uv pip install --compile-bytecode --python .venv/bin/python -c constraints/cpu.txt -e "packages/core[slurm]"
  tool=uv
else
  [ -x .venv/bin/python ] || quiet "$PY" -m venv .venv
  quiet .venv/bin/python -m pip install -c constraints/cpu.txt -e "packages/core[slurm]"
  tool=pip
fi
echo "[bootstrap] .venv: packages/core[slurm] (the fullchain CLI) ($tool, $((SECONDS - started))s)" >&2
# The rest of the main environment, as conf/env/local.yaml declares it (one line; -v: all).
.venv/bin/fullchain $VERBOSE env sync main
