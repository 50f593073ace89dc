#!/usr/bin/env bash
# Debian's chromium, for the report's browser test (tests/test_report_e2e.py runs this when
# `chromium` is missing). Needs root and apt; prints how long the install took.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
started=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "chromium installed in $(( $(date +%s) - started )) s: $(chromium --version)"
