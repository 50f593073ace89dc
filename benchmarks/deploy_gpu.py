"""Every GPU check of the deploy stage in one run, for a GPU machine without a package registry.

    python benchmarks/deploy_gpu.py [--wheels shared/wheels/deploy] [--skip-tests] [--skip-bench]

1. installs what is missing from the wheel folder only (`pip install --no-index --find-links`):
   lmdeploy (the PyTorch engine; TurboMind's library is CUDA-12-linked and 364 MB unpacked, so a
   trimmed wheel is the way on a CUDA 13 machine — FINDINGS.md), openai, and fullchain-core +
   fullchain-deploy from this tree (--no-deps);
2. runs the GPU tests: `pytest -m gpu packages/deploy/tests` (LMDeploy serving with the
   tool-call round trip and the API key, AWQ W4A16, TP2 when there are 2 GPUs);
3. the overhead benchmark: the same model (the `small` shape) served by LMDeploy's own
   `lmdeploy serve api_server`, started by hand, and by fullchain's deployment (the command in
   deployment.json, started through fullchain.core.services), under the same load (streaming
   chat, 64 output tokens, concurrency 1 and 8); prints output tokens/s and the ratio
   (goal: fullchain's overhead <= 5%).

Nothing here was run yet (no GPU was at hand when it was written); it prints each step and stops
at the first failure, so one short run says what works.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def install(wheels: Path) -> None:
    missing = [name for name in ("lmdeploy", "openai") if importlib.util.find_spec(name) is None]
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels)]
    if missing:
        step(f"install {missing} from {wheels}")
        subprocess.run([*pip, *missing], check=True)
    step("install fullchain-core and fullchain-deploy from this tree (no dependencies)")
    subprocess.run([*pip, "--no-deps", "-e", str(REPO / "packages/core"), "-e",
                    str(REPO / "packages/deploy")], check=True)


def tests() -> None:
    step("pytest -m gpu packages/deploy/tests")
    subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                    "-o", "addopts=", str(REPO / "packages/deploy/tests")], check=True, cwd=REPO)


def bench() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from deploy_cpu import PROMPTS, build_small_model
    from fullchain.core import procs, services
    from fullchain.core.contracts import read_hf_model, write_deployment
    from fullchain.deploy.bench import load_test
    from fullchain.deploy.config import BenchConfig, DeployConfig
    from fullchain.deploy.engines import deployment_for
    from fullchain.deploy.lmdeploy_engine import prepare_lmdeploy

    load = BenchConfig(concurrency=[1, 8], duration_s=30, max_requests=400, max_tokens=64,
                       prompts=PROMPTS)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = build_small_model(Path(tmp) / "hf")
        artifact = Path(tmp) / "deploy"
        cfg = DeployConfig(engine="lmdeploy", dtype="bf16", served_model_name="small")
        prepare_lmdeploy(cfg, read_hf_model(source), artifact)
        write_deployment(artifact, deployment_for(cfg))

        step("LMDeploy api_server started by hand")
        port = services.free_port()
        by_hand = [sys.executable, "-m", "lmdeploy", "serve", "api_server", str(artifact / "model"),
                   "--server-name", "127.0.0.1", "--server-port", str(port), "--model-name", "small",
                   "--dtype", "bfloat16", "--chat-template", str(artifact / "chat_template.json")]
        service = procs.start_service(by_hand, dict(os.environ), cwd=tmp, log_dir=Path(tmp) / "hand",
                                      token=procs.step_token(f"{tmp}#hand"),
                                      pid_file=Path(tmp) / "hand.json")
        try:
            started = time.time()
            procs.wait_healthy(f"http://127.0.0.1:{port}/v1/models", 600, service)
            print(f"ready in {time.time() - started:.1f}s", flush=True)
            results["by_hand"] = load_test(f"http://127.0.0.1:{port}/v1", "small", load, echo=print)
        finally:
            procs.stop(service)

        step("LMDeploy through fullchain's deployment")
        running = services.start("deploy", artifact, Path(tmp) / "fullchain", dict(os.environ))
        try:
            print(f"ready in {running.started_s:.1f}s", flush=True)
            results["fullchain"] = load_test(running.url, "small", load, echo=print)
        finally:
            services.stop(running)
    for by_hand, ours in zip(results["by_hand"], results["fullchain"]):
        ratio = ours["output_tokens_per_s"] / max(by_hand["output_tokens_per_s"], 1e-9)
        print(f"c={ours['concurrency']}: fullchain {ours['output_tokens_per_s']} tokens/s vs by hand "
              f"{by_hand['output_tokens_per_s']}: ratio {ratio:.3f} (overhead {100 * (1 - ratio):.1f}%, "
              "goal <= 5%)")
    print(json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheels", type=Path, default=REPO / "shared" / "wheels" / "deploy")
    parser.add_argument("--skip-install", action="store_true")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--skip-bench", action="store_true")
    args = parser.parse_args()
    if not args.skip_install:
        install(args.wheels)
    if not args.skip_tests:
        tests()
    if not args.skip_bench:
        bench()


if __name__ == "__main__":
    main()
