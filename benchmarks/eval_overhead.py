"""The eval stage's wall time vs the same OpenCompass config run by OpenCompass's own CLI.

Baseline: `python -m opencompass.cli.main <config.py> --debug -w <dir>` on the config file the
stage wrote (so both run exactly the same models, datasets and runner). Measured: the stage through
its worker entry point (`python -m fullchain.eval <request>`), which also converts the benchmarks,
prepares the model directories, checks the results and writes tables, chart and pins. Both are
fresh processes in the eval environment, interleaved A B B A; prints the ratio (goal <= 1.1x).

    .venv/bin/python benchmarks/eval_overhead.py [--model <hf dir>] [--items 8] [--rounds 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venvs" / "eval" / "bin" / "python"
SHARED = Path(os.environ.get("FULLCHAIN_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()


def newest_model() -> Path:
    found = sorted((ROOT / "artifacts" / "pretrain").glob("*/hf/config.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        sys.exit("no pretrain artifact with hf/ in artifacts/: pass --model <hf dir>")
    return found[-1].parent


def run_stage(out: Path, model: Path, items: int) -> float:
    (out / ".fullchain").mkdir(parents=True)
    request = {"module": "fullchain.eval", "config_class": "fullchain.eval.config:EvalConfig",
               "stage": "eval", "out": str(out), "outputs": {"eval_results": "."},
               "config": {"max_items": items, "max_new_tokens": 32, "benchmarks": [
                   {"name": "gsm8k", "path": f"{SHARED}/gsm8k/test.jsonl"},
                   {"name": "mmlu", "path": f"{SHARED}/mmlu/test/*.csv", "mode": "ppl"}]},
               "inputs": {"models": [str(model)]}}
    (out / ".fullchain" / "request.json").write_text(json.dumps(request))
    started = time.perf_counter()
    subprocess.run([str(PYTHON), "-m", "fullchain.eval", str(out / ".fullchain" / "request.json")],
                   check=True, capture_output=True)
    return time.perf_counter() - started


def run_cli(config: Path, work_dir: Path) -> float:
    started = time.perf_counter()
    subprocess.run([str(PYTHON), "-m", "opencompass.cli.main", str(config), "--debug", "-w", str(work_dir)],
                   check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None, help="an hf_model directory")
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="A B B A rounds")
    args = parser.parse_args()
    model = args.model or newest_model()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # a model dir that is an artifact's hf/ needs its artifact; a plain dir is used as is
        source = model.parent if (model.parent / "manifest.json").is_file() else model
        first = tmp / "warm"
        run_stage(first, source, args.items)  # warm the page cache; its config is the baseline's
        config = first / "opencompass" / "config.py"
        stage_times, cli_times = [], []
        for round_ in range(args.rounds):
            for order in ("AB", "BA"):
                for which in order:
                    if which == "A":
                        stage_times.append(run_stage(tmp / f"stage{round_}{order}", source, args.items))
                    else:
                        cli_times.append(run_cli(config, tmp / f"cli{round_}{order}"))
        stage_s, cli_s = sum(stage_times) / len(stage_times), sum(cli_times) / len(cli_times)
        print(f"model {model}, gsm8k (gen) + mmlu (ppl), {args.items} items each")
        print(f"stage (python -m fullchain.eval): {stage_s:.1f} s  runs {[round(t, 1) for t in stage_times]}")
        print(f"OpenCompass CLI on the same config: {cli_s:.1f} s  runs {[round(t, 1) for t in cli_times]}")
        print(f"ratio stage / OpenCompass CLI: {stage_s / cli_s:.2f}x (goal <= 1.1x)")


if __name__ == "__main__":
    main()
