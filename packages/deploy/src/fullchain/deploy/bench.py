"""Load test of an OpenAI-compatible endpoint: N concurrent streaming clients per level, for a
fixed time or a bounded number of requests. Per level: requests/s, output tokens/s,
time-to-first-token and latency p50/p99, errors and 429 refusals. Traffic goes only where the
URL points (127.0.0.1 for every server fullchain starts)."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from fullchain.deploy.config import BenchConfig

DEFAULT_PROMPTS = [
    "Explain what a hash table is.", "Write a haiku about the sea.",
    "What is the capital of France?", "List three uses of Python.",
    "How does a bicycle stay upright?", "Summarize the plot of Hamlet.",
    "Why is the sky blue?", "Give me a tip for learning to cook.",
]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[index], 4)


async def _level(url: str, model: str, concurrency: int, cfg: BenchConfig, api_key: str | None,
                 prompts: list[str]) -> dict:
    from openai import APIStatusError, AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key=api_key or "none", max_retries=0, timeout=600)
    deadline = time.perf_counter() + cfg.duration_s
    issued = 0
    latencies, ttfts, tokens, errors, refused = [], [], 0, 0, 0

    async def worker(index: int) -> None:
        nonlocal issued, tokens, errors, refused
        while time.perf_counter() < deadline and issued < cfg.max_requests:
            prompt = prompts[(issued + index) % len(prompts)]
            issued += 1
            started = time.perf_counter()
            first = None
            try:
                stream = await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": prompt}],
                    max_tokens=cfg.max_tokens, temperature=0.0, stream=True,
                    # vLLM and llama.cpp send usage in a stream only when asked (transformers
                    # always sends it and ignores the field)
                    stream_options={"include_usage": True})
                usage, chunks = None, 0
                async for chunk in stream:
                    if chunk.choices and (chunk.choices[0].delta.content
                                          or chunk.choices[0].delta.tool_calls):
                        chunks += 1
                        if first is None:
                            first = time.perf_counter() - started
                    usage = chunk.usage or usage
            except APIStatusError as exc:
                if exc.status_code == 429:
                    refused += 1
                    await asyncio.sleep(0.2)
                else:
                    errors += 1
                continue
            except Exception:  # connection errors count as errors, the test goes on
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            ttfts.append(first if first is not None else latencies[-1])
            # llama-cpp-python's server sends no usage in a stream (it ignores stream_options)
            # and one token per chunk: count chunks there
            tokens += usage.completion_tokens if usage else chunks

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    await client.close()
    return {"concurrency": concurrency, "requests": len(latencies), "seconds": round(elapsed, 2),
            "requests_per_s": round(len(latencies) / elapsed, 3),
            "output_tokens": tokens, "output_tokens_per_s": round(tokens / elapsed, 1),
            "ttft_p50_s": _percentile(ttfts, 50), "ttft_p99_s": _percentile(ttfts, 99),
            "latency_p50_s": _percentile(latencies, 50), "latency_p99_s": _percentile(latencies, 99),
            "errors": errors, "refused_429": refused}


def load_test(url: str, model: str, cfg: BenchConfig, api_key: str | None = None,
              echo=None) -> list[dict]:
    """One row per concurrency level, in the order given."""
    prompts = list(cfg.prompts) or DEFAULT_PROMPTS
    rows = []
    for concurrency in cfg.concurrency:
        row = asyncio.run(_level(url, model, concurrency, cfg, api_key, prompts))
        rows.append(row)
        if echo:
            echo(format_table([row], header=len(rows) == 1))
    return rows


COLUMNS = ("concurrency", "requests", "requests_per_s", "output_tokens_per_s", "ttft_p50_s",
           "latency_p50_s", "latency_p99_s", "errors", "refused_429")


def format_table(rows: list[dict], header: bool = True) -> str:
    widths = [max(len(c), 9) for c in COLUMNS]
    lines = ["  ".join(c.rjust(w) for c, w in zip(COLUMNS, widths))] if header else []
    for row in rows:
        lines.append("  ".join(str(row.get(c, "")).rjust(w) for c, w in zip(COLUMNS, widths)))
    return "\n".join(lines)


def write_report(rows: list[dict], directory: Path, title: str = "") -> dict[str, Path]:
    """bench.json and a latency-vs-concurrency PNG in `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [r["concurrency"] for r in rows]
    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, label in (("latency_p50_s", "latency p50"), ("latency_p99_s", "latency p99"),
                       ("ttft_p50_s", "time to first token p50")):
        latency.plot(levels, [r[key] or 0 for r in rows], marker="o", label=label)
    latency.set(xlabel="concurrent clients", ylabel="seconds", xscale="log", title="latency")
    latency.legend()
    throughput.plot(levels, [r["output_tokens_per_s"] for r in rows], marker="o")
    throughput.set(xlabel="concurrent clients", ylabel="output tokens/s", xscale="log",
                   title="throughput")
    for axis in (latency, throughput):
        axis.set_xticks(levels, [str(level) for level in levels])
        axis.minorticks_off()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(directory / "latency_vs_concurrency.png", dpi=100)
    plt.close(figure)
    return {"json": directory / "bench.json", "png": directory / "latency_vs_concurrency.png"}
