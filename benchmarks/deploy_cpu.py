"""Output tokens/s of the deploy stage's CPU server vs plain HF `generate`, same model, same machine.

    baseline  transformers `model.generate` (greedy, fp32), one request at a time, in this process,
              taken before and after each served mode (the machine is shared; ratios use the mean)
    served    the deploy artifact's server (`python -m fullchain.deploy.server`: transformers' OpenAI
              server + the gateway), streaming chat completions through the openai client, at
              concurrency 1 and 8; once with one generate() per request (default) and once with
              continuous batching (`deploy.continuous_batching=true`); modes ending in `-int8`
              serve the same model quantized (`deploy.quantization=int8`: torchao int8
              weight-only linear layers), so the int8 row compares with the fp32 row beside it;
              modes ending in `-int8_dynamic` serve it with PyTorch's dynamic int8 linear layers
              (`deploy.quantization=int8_dynamic`), and also print plain `generate` on the same
              quantized model, one request at a time (the same-model ratio)

Model: the `small` shape (hidden 384, 6 layers, 6 heads, ffn 1024; conf/model/small.yaml), random
weights, a BPE tokenizer trained here on tinyshakespeare (8k) with our ChatML template; prompts are
chat-templated questions, 64 output tokens asked (tokens counted from each answer's usage, since a
random model may stop early at an end token; the baseline counts its own the same way).
Goals (issue 11): served/baseline >= 1.0 at c=1 and >= 2.0 at c=8.

    .venv/bin/python benchmarks/deploy_cpu.py [--requests 8] [--max-tokens 64] [--modes cb,cb-int8_dynamic] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FULLCHAIN_SHARED_DATA", REPO.parent / "shared" / "data"))
PROMPTS = ["Explain what a hash table is.", "Write a haiku about the sea.",
           "What is the capital of France?", "List three uses of Python.",
           "How does a bicycle stay upright?", "Summarize the plot of Hamlet.",
           "Why is the sky blue?", "Give me a tip for learning to cook."]


def build_small_model(out: Path) -> Path:
    import torch
    from fullchain.data.tokenize_config import CHATML_TOOLS_TEMPLATE
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    torch.manual_seed(0)
    specials = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    text = (SHARED / "tinyshakespeare" / "input.txt")
    lines = text.read_text().splitlines() if text.is_file() else PROMPTS * 100
    raw.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=8192, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>",
                                        pad_token="<|pad|>", additional_special_tokens=specials[2:])
    tokenizer.chat_template = CHATML_TOOLS_TEMPLATE
    return save_random_llama(tokenizer, out, hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
                             num_attention_heads=6, num_key_value_heads=6, max_position_embeddings=1024)


def save_random_llama(tokenizer, out: Path, **shape) -> Path:
    """A randomly initialised Llama of `shape` (LlamaConfig fields) with `tokenizer`, saved to
    `out` with a greedy generation config that stops at the tokenizer's end token."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None, **shape)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                     do_sample=False).save_pretrained(out)
    return out


def baseline(model_dir: Path, requests: int, max_tokens: int, int8_dynamic: bool = False) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    if int8_dynamic:
        from fullchain.deploy.quantize import dynamic_int8

        model = dynamic_int8(model)
    eos = json.loads((model_dir / "generation_config.json").read_text())["eos_token_id"]
    tokens, started = 0, None
    for index in range(requests + 1):  # the first one warms up
        if index == 1:
            started = time.perf_counter()
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}], add_generation_prompt=True,
            return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False,
                                 eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
        if index:
            tokens += out.shape[1] - inputs["input_ids"].shape[1]
    seconds = time.perf_counter() - started
    return {"output_tokens": tokens, "seconds": round(seconds, 2),
            "output_tokens_per_s": round(tokens / seconds, 1)}


def served(artifact: Path, continuous_batching: bool, requests: int, max_tokens: int,
           quantization: str = "none", threads: int = 0) -> dict:
    from fullchain.core import services
    from fullchain.core.contracts import write_deployment
    from fullchain.deploy.bench import load_test
    from fullchain.deploy.config import BenchConfig, DeployConfig
    from fullchain.deploy.engines import deployment_for

    cfg = DeployConfig(continuous_batching=continuous_batching, max_tokens=max_tokens,
                       default_max_tokens=max_tokens, quantization=quantization,
                       max_concurrent_requests=16, threads=threads)
    write_deployment(artifact, replace(deployment_for(cfg), startup_timeout_s=300))
    running = services.start("bench", artifact, artifact / "logs", dict(os.environ))
    try:
        result = {"startup_s": round(running.started_s, 1)}
        warm = BenchConfig(concurrency=[1], duration_s=60, max_requests=1, max_tokens=max_tokens,
                           prompts=PROMPTS)
        load_test(running.url, cfg.served_model_name, warm)
        for concurrency in (1, 8):
            bench = BenchConfig(concurrency=[concurrency], duration_s=600,
                                max_requests=requests * 2 if concurrency > 1 else requests,
                                max_tokens=max_tokens, prompts=PROMPTS)
            (row,) = load_test(running.url, cfg.served_model_name, bench)
            result[f"c{concurrency}"] = row
    finally:
        services.stop(running)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=8, help="requests at c=1 (twice as many at c=8)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0,
                        help="the server's torch threads (deploy.threads; 0: torch's default, one per core); "
                             "the baseline keeps torch's default")
    parser.add_argument("--modes", default="plain,cb", help="plain and/or cb (continuous batching), "
                        "each optionally with -int8 (e.g. cb,cb-int8)")
    args = parser.parse_args()
    from fullchain.core.contracts import read_hf_model
    from fullchain.deploy.engines import MODEL_DIR
    from fullchain.deploy.prepare import stage_model

    with tempfile.TemporaryDirectory() as tmp:
        source = build_small_model(Path(tmp) / "hf")
        artifact = Path(tmp) / "deploy"
        stage_model(read_hf_model(source), artifact / MODEL_DIR)
        quantized = Path(tmp) / "deploy-int8"
        modes = args.modes.split(",")
        if unknown := [m for m in modes if m.split("-")[0] not in ("plain", "cb")
                       or m.partition("-")[2] not in ("", "int8", "int8_dynamic")]:
            parser.error(f"--modes: {unknown} (plain or cb, optionally -int8 or -int8_dynamic)")
        if any(mode.endswith("-int8") for mode in modes):
            from fullchain.deploy.config import DeployConfig
            from fullchain.deploy.quantize import quantize_in_place

            stage_model(read_hf_model(source), quantized / MODEL_DIR)
            print(f"int8: {quantize_in_place(DeployConfig(quantization='int8'), quantized / MODEL_DIR)}")
        report = {}
        # The machine is shared: the baseline is taken right before and after each served mode,
        # and each ratio uses the mean of the two around it.
        before = baseline(artifact / MODEL_DIR, args.requests, args.max_tokens)
        for mode in modes:
            quantization = mode.partition("-")[2] or "none"
            result = served(quantized if quantization == "int8" else artifact, mode.startswith("cb"),
                            args.requests, args.max_tokens, quantization, args.threads)
            after = baseline(artifact / MODEL_DIR, args.requests, args.max_tokens)
            base = (before["output_tokens_per_s"] + after["output_tokens_per_s"]) / 2
            print(f"baseline HF generate, 1 at a time, around '{mode}': "
                  f"{before['output_tokens_per_s']} / {after['output_tokens_per_s']} tokens/s", flush=True)
            result["baseline_tokens_per_s"] = [before["output_tokens_per_s"], after["output_tokens_per_s"]]
            report[mode] = result
            for level in ("c1", "c8"):
                row = result[level]
                ratio = row["output_tokens_per_s"] / base
                result[f"{level}_ratio"] = round(ratio, 2)
                print(f"served ({mode}) {level}: {row['output_tokens_per_s']} tokens/s, "
                      f"latency p50 {row['latency_p50_s']}s, ttft p50 {row['ttft_p50_s']}s, "
                      f"errors {row['errors']}, 429 {row['refused_429']}; ratio vs baseline "
                      f"{ratio:.2f} (goal {'>= 1.0' if level == 'c1' else '>= 2.0'})", flush=True)
            if quantization == "int8_dynamic":
                same = baseline(artifact / MODEL_DIR, args.requests, args.max_tokens, int8_dynamic=True)
                result["same_model_baseline_tokens_per_s"] = same["output_tokens_per_s"]
                for level in ("c1", "c8"):
                    ratio = result[level]["output_tokens_per_s"] / same["output_tokens_per_s"]
                    result[f"{level}_same_model_ratio"] = round(ratio, 2)
                    print(f"served ({mode}) {level} vs HF generate on the same int8_dynamic model "
                          f"({same['output_tokens_per_s']} tokens/s): {ratio:.2f}", flush=True)
            print(f"served ({mode}) start-up: {result['startup_s']}s", flush=True)
            before = after
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
