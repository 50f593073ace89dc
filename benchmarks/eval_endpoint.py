"""Endpoint-mode throughput: samples/s at `eval.endpoint_concurrency` 1 vs 8 against the CPU
deploy engine (the deploy artifact served as the runner serves it: transformers serve behind the
gateway).

Serves a deploy artifact on a free port (or uses --endpoint), then, in the eval environment, builds
OpenCompass's OpenAI model class exactly as the eval stage configures it
(`translate.model_config`, only `endpoint_concurrency` differs) and times its generation over the
same ARC-Easy prompts (OpenCompass's GenInferencer hands the model `batch_size` prompts at a time;
OpenAISDK sends one batch's requests at once from `max_workers` threads). Runs 1 8 8 1 and prints
samples/s for each and the ratio. Same model, same items, same greedy settings.

    .venv/bin/python benchmarks/eval_endpoint.py [--deploy artifacts/deploy/<id>] [--items 32]
        [--max-new-tokens 16] [--concurrency 8] [--model <hf dir>] [--endpoint URL --tokenizer DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from fullchain.core import services

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venvs" / "eval" / "bin" / "python"
SHARED = Path(os.environ.get("FULLCHAIN_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()

# Runs in the eval environment: argv = url, tokenizer dir, items, max_new_tokens, levels (JSON)
MEASURE = r"""
import json, sys, tempfile, time
from pathlib import Path
from fullchain.eval.benchmarks import convert
from fullchain.eval.config import EvalConfig
from fullchain.eval.stage import transformers4_dir, wait_for_endpoint
from fullchain.eval.translate import ModelSpec, model_config
from opencompass.utils import build_model_from_cfg

url, tokenizer, items, new_tokens, levels, shared = sys.argv[1:7]
served = wait_for_endpoint(url, 3)
tokenizer = str(transformers4_dir(Path(tokenizer), Path(tempfile.mkdtemp()) / "tokenizer"))  # as the stage does
# ARC-Easy as the custom mcq gen template prompts it (GSM8K's arithmetic makes the tuned demo
# model answer with tool calls, which the server returns as `tool_calls`, not text)
bench = convert("arc_easy", f"{shared}/arc/arc_easy.jsonl", Path(tempfile.mkdtemp()), int(items), seed=0)
rows = [json.loads(line) for line in bench.path.read_text().splitlines()]
prompts = ["Question: " + r["question"] + "".join(f"\n{o}. {r[o]}" for o in bench.options) + "\nAnswer:"
           for r in rows]
for level in json.loads(levels):
    cfg = EvalConfig(endpoint=url, endpoint_concurrency=level, max_new_tokens=int(new_tokens))
    spec = ModelSpec(name="endpoint", kind="api", path=url, tokenizer=tokenizer, api_model=served[0])
    model_cfg = model_config(spec, cfg)
    batch = model_cfg["batch_size"]  # what GenInferencer hands the model at once
    model = build_model_from_cfg(model_cfg)
    started = time.perf_counter()
    replies = []
    for begin in range(0, len(prompts), batch):
        replies += model.generate(prompts[begin:begin + batch], max_out_len=int(new_tokens))
    seconds = time.perf_counter() - started
    empty = sum(1 for r in replies if not r.strip())
    chars = sum(len(r) for r in replies) / max(len(replies), 1)
    print(json.dumps({"concurrency": level, "seconds": seconds, "samples": len(replies), "empty": empty,
                      "chars": chars}), flush=True)
"""


def newest_deploy() -> Path:
    found = sorted((ROOT / "artifacts" / "deploy").glob("*/deployment.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        sys.exit("no deploy artifact in artifacts/deploy: pass --deploy <dir> or --endpoint <url>")
    return found[-1].parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deploy", type=Path, help="deploy artifact (served here on a free port)")
    parser.add_argument("--endpoint", help="a running server's /v1 base URL instead (needs --tokenizer)")
    parser.add_argument("--tokenizer", help="local tokenizer dir (default: the deploy artifact's model/)")
    parser.add_argument("--model", type=Path, help="serve this hf model directory instead of the deploy "
                        "artifact's model/, with the artifact's engine and settings (e.g. pretrain's "
                        "hf/: the demo's tuned model answers every question with a tool call)")
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=16,
                        help="16: the demo's tuned model is cut inside its tool call, so the server "
                             "answers text (a whole call comes back as `tool_calls`, no text)")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    running = None
    deploy = None if args.endpoint else (args.deploy or newest_deploy()).resolve()
    if deploy is not None and args.model is not None:  # the same deployment, another model/
        copy = Path(tempfile.mkdtemp(prefix="eval-endpoint-")) / "deploy"
        (copy / "model").mkdir(parents=True)
        (copy / "deployment.json").write_text((deploy / "deployment.json").read_text())
        for item in args.model.resolve().iterdir():
            (copy / "model" / item.name).symlink_to(item)
        deploy = copy
    tokenizer = args.tokenizer or (str(deploy / "model") if deploy else None)
    if tokenizer is None:
        sys.exit("--endpoint needs --tokenizer <local tokenizer dir>")
    if args.endpoint:
        url = args.endpoint.rstrip("/")
    else:
        running = services.start("deploy", deploy, Path(tempfile.mkdtemp()), dict(os.environ), port=0)
        url = running.url.rstrip("/")  # the root plus the deployment's api_base
        print(f"serving {deploy} at {url}", flush=True)
    levels = [1, args.concurrency, args.concurrency, 1]
    try:
        result = subprocess.run([str(PYTHON), "-c", MEASURE, url, tokenizer, str(args.items),
                                 str(args.max_new_tokens), json.dumps(levels), str(SHARED)],
                                capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        if running is not None:
            services.stop(running)
    if result.returncode != 0:
        sys.exit(f"measurement failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    rates: dict[int, list[float]] = {}
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            run = json.loads(line)
            rate = run["samples"] / run["seconds"]
            rates.setdefault(run["concurrency"], []).append(rate)
            print(f"concurrency {run['concurrency']}: {run['samples']} samples in {run['seconds']:.1f} s "
                  f"= {rate:.3f} samples/s ({run['empty']} empty replies, {run['chars']:.0f} chars per reply)", flush=True)
    errors = (result.stdout + result.stderr).count(" - ERROR - ")
    print(f"OpenCompass logged {errors} failed request(s) (each retried; a tool_calls reply with no "
          "text counts as failed)")
    one, many = statistics.fmean(rates[1]), statistics.fmean(rates[args.concurrency])
    print(f"samples/s: concurrency {args.concurrency} {many:.3f} vs 1 {one:.3f} -> ratio {many / one:.2f}x "
          f"(means of 2 runs each, {args.items} ARC-Easy items, {args.max_new_tokens} new tokens, greedy)")


if __name__ == "__main__":
    main()
