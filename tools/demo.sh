#!/usr/bin/env bash
# The tiny end-to-end demo on CPU: sets itself up, then runs `experiment=tiny`.
# Extra arguments are Hydra overrides, e.g.  tools/demo.sh pretrain.schedule.train_iters=50
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/bootstrap.sh
.venv/bin/fullchain run experiment=tiny "$@"
.venv/bin/fullchain plan experiment=tiny "$@"
