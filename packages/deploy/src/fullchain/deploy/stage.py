"""`run(cfg, inputs, out)`: a HF model in, a deployment out (the servable model, the exact serve
command and settings), checked by starting the server once."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from fullchain.core import services
from fullchain.core.artifact import Artifact
from fullchain.core.contracts import read_hf_model, write_deployment
from fullchain.deploy.config import DeployConfig
from fullchain.deploy.engines import MODEL_DIR, deployment_for

log = logging.getLogger("fullchain.deploy")


def run(cfg: DeployConfig, inputs: dict[str, Artifact | str | Path], out: Path) -> dict:
    from dataclasses import replace

    from fullchain.deploy.prepare import stage_model

    if ("model" in inputs) == bool(cfg.model_path):
        raise ValueError("model_path: give either the `model` input or deploy.model_path (a local "
                         "HF directory; then unwire the input: ~graph.deploy.inputs.model)")
    model = read_hf_model(inputs["model"] if "model" in inputs else cfg.model_path)
    if model.adapter:
        raise ValueError(f"{model.path}: a peft adapter; deploy serves full weights (tune's "
                         "merged hf/ directory)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if cfg.engine == "lmdeploy":
        from fullchain.deploy.lmdeploy_engine import prepare_lmdeploy

        changes = prepare_lmdeploy(cfg, model, out)
    else:
        changes = stage_model(model, out / MODEL_DIR)
        if cfg.quantization == "int8":
            from fullchain.deploy.quantize import quantize_in_place

            changes.update(quantize_in_place(cfg, out / MODEL_DIR))
    log.info("servable model at %s (%.1fs; %s)", out / MODEL_DIR, time.perf_counter() - started,
             ", ".join(f"{k} set" for k in changes) or "as exported")
    deployment = replace(deployment_for(cfg, sys.executable), source_model=str(model.path))
    write_deployment(out, deployment)
    metrics: dict = {"engine": deployment.engine, "served_model_name": deployment.model_name,
                     "quantization": deployment.quantization,
                     **{k: v for k, v in changes.items() if k.startswith("weights_bytes")},
                     "model_bytes": sum(f.stat().st_size for f in (out / MODEL_DIR).rglob("*")
                                        if f.is_file())}
    if cfg.smoke_test or cfg.bench.concurrency:
        metrics.update(_check_by_serving(cfg, out))
    return metrics


def _check_by_serving(cfg: DeployConfig, out: Path) -> dict:
    """Start the server as the runner would, smoke-test it (and load-test it if asked), stop it."""
    from fullchain.deploy.smoke import smoke_test

    running = services.start("deploy", out, out / "logs" / "service", dict(os.environ))
    try:
        api_key = os.environ.get(cfg.api_key_env) or None
        metrics = {"startup_s": round(running.started_s, 2)}
        metrics.update(smoke_test(running.url, cfg.served_model_name, api_key))
        log.info("smoke test passed: started in %.1fs, chat %.2fs, tool-call request %.2fs "
                 "(%d call(s))", running.started_s, metrics["smoke_chat_latency_s"],
                 metrics["smoke_tool_latency_s"], metrics["smoke_tool_calls"])
        if cfg.bench.concurrency:
            from fullchain.deploy.bench import load_test, write_report

            rows = load_test(running.url, cfg.served_model_name, cfg.bench, api_key)
            write_report(rows, out / "bench")
            for row in rows:
                c = row["concurrency"]
                metrics[f"bench_c{c}_output_tokens_per_s"] = row["output_tokens_per_s"]
                metrics[f"bench_c{c}_latency_p50_s"] = row["latency_p50_s"]
    finally:
        services.stop(running)
    return metrics
