#!/usr/bin/env bash
# The tiny end-to-end demo on CPU: sets itself up, runs `experiment=tiny` (the whole chain), then
# writes the run's HTML report and prints the summary table.
# Extra arguments are Hydra overrides, e.g.  tools/demo.sh pretrain.schedule.train_iters=50
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
bash tools/bootstrap.sh
.venv/bin/fullchain env sync eval     # OpenCompass's own environment (the eval step)
echo "[demo] set-up: $((SECONDS - started))s" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
started=$SECONDS
.venv/bin/fullchain run experiment=tiny "$@" 2>&1 | tee "$log"
echo "[demo] run: $((SECONDS - started))s" >&2
# the runner's last line names the run record: "(run record: <runs>/<run>/run.json)"
run_json=$(sed -n 's/.*(run record: \(.*run\.json\)).*/\1/p' "$log" | tail -n 1)
if [ -z "$run_json" ]; then
  echo "demo: the run printed no run record; see the output above" >&2
  exit 1
fi
.venv/bin/fullchain report "$(dirname "$run_json")"
