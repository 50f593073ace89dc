"""The eval stage: every model of the `models` role (and an endpoint) scored in ONE OpenCompass run.

Artifact layout (`out`):
    data/                    the benchmarks as OpenCompass reads them (benchmarks.py), tool_use.jsonl
    models/<name>/           each HF model as transformers 4 (OpenCompass's pin) loads it
    opencompass/config.py    the OpenCompass config (`opencompass opencompass/config.py` reruns it)
    opencompass/<time>/      OpenCompass's own outputs: predictions/, results/, logs/, summary/
    results.json             eval_results contract: one row per model x benchmark
    results.md, results.csv  rows benchmark, columns model (+ items, metric, contamination)
    results.png              the models side by side
    pins.json                per row: what makes two results comparable (see report.PIN_FIELDS)
Runs in the eval environment (conf/env: eval), which holds opencompass.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fullchain.core.artifact import Artifact, write_json_atomic
from fullchain.core.contracts import (
    EvalRow,
    read_deployment,
    read_hf_model,
    read_packed_corpus,
    read_tool_tasks,
    write_eval_results,
)
from fullchain.eval import report
from fullchain.eval.benchmarks import CONVERSION_VERSION, check_mode, convert, draw
from fullchain.eval.config import EvalConfig
from fullchain.eval.translate import ModelSpec

logger = logging.getLogger(__name__)

CHAT_STAGES = ("tune",)
"""Models made by these stage kinds are chat models (gen tasks with their chat template); others
(pretrain's hf/) are base models (ppl tasks for ppl benchmarks)."""


class EndpointError(RuntimeError):
    """The endpoint did not answer; the message names the URL."""


# ---------------------------------------------------------------------------- inputs


def transformers4_dir(source: Path, target: Path) -> Path:
    """`source` as transformers 4 loads it: the files linked, tokenizer_config.json rewritten
    where transformers 5 saved its `TokenizersBackend` class (4.x calls it
    PreTrainedTokenizerFast; same tokenizer.json), the chat template inlined."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        link = target / item.name
        if link.is_symlink() or link.exists():
            link.unlink()
        if item.name == "tokenizer_config.json":
            config = json.loads(item.read_text(encoding="utf-8"))
            if config.get("tokenizer_class") == "TokenizersBackend":
                config["tokenizer_class"] = "PreTrainedTokenizerFast"
                # 4.x's fast tokenizer also returns token_type_ids, which generate() refuses
                config.setdefault("model_input_names", ["input_ids", "attention_mask"])
            if "chat_template" not in config and (source / "chat_template.jinja").is_file():
                config["chat_template"] = (source / "chat_template.jinja").read_text(encoding="utf-8")
            link.write_text(json.dumps(config, indent=2), encoding="utf-8")
        elif item.is_file():
            link.symlink_to(item.resolve())
    return target


def model_specs(inputs: dict[str, Any], out: Path) -> tuple[list[ModelSpec], dict[str, str]]:
    """The HF models of the `models` role (name = the node that made each) and their ids."""
    sources = inputs.get("models") or []
    sources = sources if isinstance(sources, list) else [sources]
    specs, ids = [], {}
    for artifact in sources:
        model = read_hf_model(artifact)  # refuses a model without a chat template
        name = artifact.node if isinstance(artifact, Artifact) else Path(model.path).parent.name
        if name in ids:
            raise ValueError(f"models: two models are named {name!r} (graph nodes must differ)")
        kind = "chat" if isinstance(artifact, Artifact) and artifact.stage in CHAT_STAGES else "base"
        local = transformers4_dir(Path(model.path), out / "models" / name)
        specs.append(ModelSpec(name=name, kind=kind, path=str(local), tokenizer=str(local)))
        ids[name] = f"step:{artifact.step_id}" if isinstance(artifact, Artifact) else f"dir:{model.path}"
    return specs, ids


def wait_for_endpoint(url: str, retries: int, first_delay: float = 1.0) -> list[str]:
    """GET <url>/models with exponential backoff; the served model names, or EndpointError."""
    delay, last = first_delay, ""
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/models", timeout=10) as response:
                return [m["id"] for m in json.loads(response.read()).get("data", [])]
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = str(exc)
        if attempt < retries:
            logger.info("endpoint %s not answering (%s); retry %d/%d in %.0f s", url, last,
                        attempt + 1, retries, delay)
            time.sleep(delay)
            delay *= 2
    raise EndpointError(f"endpoint {url} did not answer GET {url.rstrip('/')}/models after "
                        f"{retries + 1} attempts with backoff: {last}")


def endpoint_spec(cfg: EvalConfig, inputs: dict[str, Any], models: list[ModelSpec],
                  out: Path) -> tuple[ModelSpec | None, str]:
    mode = cfg.endpoint or ("deploy" if "endpoint" in inputs else None)
    if mode is None:
        return None, ""
    tokenizer = cfg.endpoint_tokenizer
    if mode == "deploy":
        if "endpoint" not in inputs or not getattr(inputs["endpoint"], "url", None):
            raise ValueError("endpoint: `deploy` needs the node's `endpoint` role wired to a deploy "
                             "node (inputs: {endpoint: deploy}), which the runner serves")
        artifact = inputs["endpoint"]
        deployment = read_deployment(artifact)
        url = artifact.url.rstrip("/")
        url = url if url.endswith(deployment.api_base.rstrip("/")) else url + deployment.api_base
        name, identity = artifact.node, f"step:{artifact.step_id}"
        if tokenizer is None:  # the served model's own tokenizer: the deployment's copy, else its source
            served_copy = Path(deployment.path or "") / "model"
            tokenizer = str(served_copy) if (served_copy / "tokenizer_config.json").is_file() else deployment.source_model
    else:
        url, name, identity = cfg.endpoint.rstrip("/"), "endpoint", f"url:{cfg.endpoint}"
    served = wait_for_endpoint(url, cfg.endpoint_retries)
    api_model = cfg.endpoint_model or (served[0] if served else "")
    if not api_model:
        raise EndpointError(f"endpoint {url}: /models lists no model; set eval.endpoint_model")
    if tokenizer is None:
        if not models:
            raise ValueError("endpoint_tokenizer: a URL endpoint needs a local tokenizer directory "
                             "(no model of the `models` role to take it from)")
        tokenizer = models[0].tokenizer
    local = transformers4_dir(Path(tokenizer), out / "models" / f"{name}-tokenizer")
    return ModelSpec(name=name, kind="api", path=url, tokenizer=str(local), api_model=api_model), identity


def tools_system_prompt(tokenizer_dir: str, system: str | None, tools: list[dict]) -> str:
    """The system message content that renders exactly as the chat template renders `tools`
    (OpenCompass's chat models and the OpenAI API pass messages, not tools). Checked: the prompt
    with this system message equals the prompt with `tools=` for the same question."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    question = [{"role": "user", "content": "QUESTION"}]
    head = [{"role": "system", "content": system}] if system else []
    with_tools = tokenizer.apply_chat_template(head + question, tools=tools, tokenize=False,
                                               add_generation_prompt=True)
    start, end = "<|im_start|>system\n", "<|im_end|>"
    if not with_tools.startswith(start) or end not in with_tools:
        raise ValueError(f"{tokenizer_dir}: its chat template does not render tools as a ChatML "
                         "system turn; the tool-use task cannot declare them through messages")
    content = with_tools[len(start):with_tools.index(end)]
    plain = tokenizer.apply_chat_template([{"role": "system", "content": content}] + question,
                                          tokenize=False, add_generation_prompt=True)
    if plain != with_tools:
        raise ValueError(f"{tokenizer_dir}: a system message cannot reproduce the template's "
                         "tools prompt; the tool-use task would be scored on a different prompt")
    return content


# ---------------------------------------------------------------------------- OpenCompass


def run_opencompass(config_file: Path, work_dir: Path, extra: list[str] = ()) -> Path:
    """OpenCompass's own CLI entry point, in this process; returns its timestamped output dir."""
    from opencompass.cli.main import main as opencompass_main

    before = set(work_dir.iterdir()) if work_dir.is_dir() else set()
    argv = sys.argv
    sys.argv = ["opencompass", str(config_file), "-w", str(work_dir), *extra]
    try:
        opencompass_main()
    finally:
        sys.argv = argv
    created = sorted(p for p in work_dir.iterdir() if p.is_dir() and p not in before)
    if not created:
        raise RuntimeError(f"OpenCompass wrote no output directory under {work_dir}")
    return created[-1]


def collect(run_dir: Path, oc_config: dict, expected: dict[str, int]) -> list[dict[str, Any]]:
    """One record per (model, dataset, metric) from OpenCompass's results/ and predictions/;
    refuses a missing result or a prediction count that differs from the items scored."""
    records = []
    for combination in oc_config["model_dataset_combinations"]:
        for model in combination["models"]:
            for dataset in combination["datasets"]:
                model_abbr, abbr = model["abbr"], dataset["abbr"]
                model_name = model_abbr.partition("@")[0]  # `<name>@chat`: a base model via its chat template
                result_file = run_dir / "results" / model_abbr / f"{abbr}.json"
                prediction_file = run_dir / "predictions" / model_abbr / f"{abbr}.json"
                if not result_file.is_file() or not prediction_file.is_file():
                    raise RuntimeError(f"OpenCompass left no result for {model_name} on {abbr} "
                                       f"({result_file}); see {run_dir / 'logs'}")
                result = json.loads(result_file.read_text(encoding="utf-8"))
                if "error" in result:
                    raise RuntimeError(f"{result_file}: {result['error']}")
                predictions = json.loads(prediction_file.read_text(encoding="utf-8"))
                if len(predictions) != expected[abbr]:
                    raise RuntimeError(f"{prediction_file}: {len(predictions)} predictions for "
                                       f"{expected[abbr]} items: the result is incomplete")
                if model.get("openai_api_base") and any(
                        not str(p.get("prediction", "")).strip() for p in predictions.values()):
                    raise EndpointError(f"endpoint {model['openai_api_base']}: empty replies in "
                                        f"{prediction_file} (requests failed after retries)")
                benchmark, _, mode = abbr.rpartition("-")
                for metric, value in result.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        records.append({"model": model_name, "benchmark": benchmark, "mode": mode,
                                        "metric": metric, "score": float(value),
                                        "num_items": expected[abbr], "dataset": dataset})
    return records


# ---------------------------------------------------------------------------- run


def run(cfg: EvalConfig, inputs: dict[str, Any], out: Path) -> dict[str, Any]:
    # OpenCompass is imported once the inputs are checked: a bad benchmark file, a model without
    # chat template or a dead endpoint fail before its (multi-second) import.
    started = time.time()
    out = Path(out)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    models, identities = model_specs(inputs, out)
    endpoint, endpoint_id = endpoint_spec(cfg, inputs, models, out)
    if endpoint is not None:
        identities[endpoint.name] = endpoint_id
    scored = models + ([endpoint] if endpoint else [])
    if not scored:
        raise ValueError("models: nothing to score: wire the node's `models` role (e.g. "
                         "[pretrain, tune]) or set eval.endpoint")

    data_dir = out / "data"
    benchmarks = []
    for bench in cfg.benchmarks:
        converted = convert(bench.name, bench.path, data_dir, cfg.max_items, cfg.seed)
        check_mode(converted, bench.mode)
        logger.info("benchmark %s: %d of %d items (%s)", bench.name, converted.num_items,
                    converted.total_items, converted.kind)
        benchmarks.append((converted, bench.mode))

    tool_use = None
    tool_hash = ""
    if "tasks" in inputs:
        from fullchain.eval.tool_dataset import write_tool_use

        task_set = read_tool_tasks(inputs["tasks"])
        tasks = list(task_set.tasks(cfg.tool_split))
        tasks = [tasks[i] for i in draw(len(tasks), cfg.tool_max_items, cfg.seed)]
        template_source = scored[0].tokenizer
        system = tools_system_prompt(template_source, task_set.system, task_set.tools)
        for model in scored[1:]:  # every model's template must render the tools the same way
            if model.kind != "api" and tools_system_prompt(model.tokenizer, task_set.system,
                                                           task_set.tools) != system:
                raise ValueError(f"models: {model.name}'s chat template renders the tools "
                                 f"differently from {scored[0].name}'s")
        data_dir.mkdir(parents=True, exist_ok=True)
        tool_use = (write_tool_use(data_dir / "tool_use.jsonl", tasks, system), task_set.tools)
        from fullchain.eval.benchmarks import content_hash

        tool_hash = content_hash([task_set.splits[cfg.tool_split]])
        expected_tool = len(tasks)

    import opencompass
    from fullchain.eval.translate import render_config, template_hash, to_opencompass_config

    work_dir = out / "opencompass"
    if work_dir.exists():  # an interrupted attempt of this step: start over
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    oc_config = to_opencompass_config(cfg, scored, benchmarks, tool_use, work_dir)
    config_file = work_dir / "config.py"
    config_file.write_text(render_config(oc_config), encoding="utf-8")
    expected = {f"{b.name}-{m}": b.num_items for b, _ in benchmarks for m in ("ppl", "gen")}
    if tool_use is not None:
        expected["tool_use-gen"] = expected_tool
    logger.info("OpenCompass %s: %d models x %d datasets (%s runner)", opencompass.__version__,
                len(scored), len(oc_config["datasets"]), cfg.runner)
    oc_started = time.time()
    extra = ["--debug"] if cfg.runner == "debug" else []
    run_dir = run_opencompass(config_file, work_dir, extra)
    oc_seconds = time.time() - oc_started
    records = collect(run_dir, oc_config, expected)

    # pins: what makes a score comparable with another (report.PIN_FIELDS)
    hashes = {b.name: (b.file_hash, b.item_ids) for b, _ in benchmarks}
    generation = {"max_new_tokens": cfg.max_new_tokens, "max_seq_len": cfg.max_seq_len,
                  "do_sample": False}
    # The engine that ran the model; whether it was prompted through its chat template is the
    # model's own (base or chat) and part of what the row compares, like its weights.
    engines = {m.name: ("openai-api" if m.kind == "api" else "huggingface") for m in scored}
    rows = []
    for record in records:
        name = record["benchmark"]
        file_hash, item_ids = hashes.get(name, (tool_hash, []))
        if name == "tool_use":
            item_ids = [t["id"] for t in tasks]
        rows.append({**{k: v for k, v in record.items() if k != "dataset"},
                     "pins": report.pins(
                         benchmark_file_hash=file_hash, items=item_ids,
                         conversion_version=CONVERSION_VERSION,
                         template_hash=template_hash(record["dataset"]), generation=generation,
                         mode=record["mode"], engine=engines[record["model"]],
                         opencompass_version=opencompass.__version__,
                         model_id=identities[record["model"]])})

    # held-out perplexity and bits per byte on the corpus' validation split
    if "corpus" in inputs and models:
        from fullchain.eval.heldout import score_texts, validation_texts
        from transformers import AutoTokenizer

        corpus = read_packed_corpus(inputs["corpus"])
        corpus_tok = transformers4_dir(corpus.tokenizer_dir, out / "models" / "corpus-tokenizer")
        texts = validation_texts(corpus, cfg.heldout_max_tokens, AutoTokenizer.from_pretrained(str(corpus_tok)))
        corpus_id = (f"step:{inputs['corpus'].step_id}" if isinstance(inputs["corpus"], Artifact)
                     else str(corpus.path))
        for model in models:
            scores = score_texts(model.path, texts, cfg.max_seq_len)
            logger.info("held-out %s: perplexity %.3f, %.4f bits/byte over %d bytes", model.name,
                        scores["perplexity"], scores["bits_per_byte"], scores["bytes"])
            for metric in ("perplexity", "bits_per_byte"):
                rows.append({"model": model.name, "benchmark": "heldout", "mode": "ppl",
                             "metric": metric, "score": scores[metric], "num_items": len(texts),
                             "pins": report.pins(
                                 benchmark_file_hash=corpus_id, items=[str(scores["bytes"])],
                                 conversion_version=CONVERSION_VERSION, template_hash="",
                                 generation={"max_seq_len": cfg.max_seq_len}, mode="ppl",
                                 engine="transformers", opencompass_version=opencompass.__version__,
                                 model_id=identities[model.name])})

    contamination = {}
    if "corpus" in inputs and isinstance(inputs["corpus"], Artifact):
        # which scored items the corpus held (ids as the data stage names them)
        scored_ids = {b.name: b.item_ids for b, _ in benchmarks}
        contamination = report.contamination(inputs["corpus"].path / "decontamination.json", scored_ids)
    write_outputs(out, rows, contamination)
    metrics: dict[str, Any] = {"models": [m.name for m in scored],
                               "opencompass_seconds": round(oc_seconds, 2),
                               "wall_seconds": round(time.time() - started, 2)}
    for row in rows:
        metrics[f"{row['model']}/{row['benchmark']}/{row['metric']}"] = round(row["score"], 4)
    return metrics


def write_outputs(out: Path, rows: list[dict[str, Any]], contamination: dict[str, dict]) -> None:
    """results.md/.csv/.png, pins.json, then results.json (the contract) last."""
    report.write_tables(out, rows, contamination)
    report.write_chart(out / "results.png", rows)
    write_json_atomic(out / "pins.json", {"rows": [
        {k: r[k] for k in ("model", "benchmark", "mode", "metric", "num_items", "pins")} for r in rows],
        "contamination": contamination})
    write_eval_results(out, [EvalRow(model=r["model"], benchmark=f"{r['benchmark']}/{r['mode']}"
                                     if r["benchmark"] != "heldout" else "heldout",
                                     metric=r["metric"], score=r["score"], num_items=r["num_items"])
                             for r in rows])
