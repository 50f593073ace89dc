"""Benchmark of the data stage (fullchain.data.run) on ~5 and ~10 MB of real text.

Prints, for each corpus size: seconds, MB/s of raw input, and peak RSS (the driver and, separately,
the largest datatrove/pack child process). Memory must not grow with corpus size: the stage
streams documents through datatrove tasks, so the 10 MB peak should stay close to the 5 MB one.
Also prints one named-baseline ratio, measured in this process on the same text: datatrove's
Gopher quality + repetition filters with their default word splitter (spaCy's blank English
model) against the same filters with ours (whitespace words, edge punctuation stripped).

The corpus is built from ../shared/data (tinyshakespeare, classical Chinese, wiki and C4
samples: ~3.9 MB) repeated with variation (every copy after the first shuffles the sentences of
each document), so near-duplicate removal takes out most copies: that is part of the work timed,
and the dedup counts are printed.

    .venv/bin/python benchmarks/data_stage.py [--sizes 5 10]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FULLCHAIN_SHARED_DATA", REPO.parent / "shared" / "data"))


def base_documents() -> list[tuple[str, str]]:
    """(language group, text) documents of the shared corpora."""
    docs = []
    text = (SHARED / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    docs += [("en", "\n\n".join(paragraphs[i: i + 20])) for i in range(0, len(paragraphs), 20)]
    text = (SHARED / "chinese-poetry" / "zh_classics.txt").read_text(encoding="utf-8")
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    docs += [("zh", "\n\n".join(paragraphs[i: i + 4])) for i in range(0, len(paragraphs), 4)]
    docs += [("en", line) for line in (SHARED / "llamafactory-pretrain-demo" / "wiki_demo.txt")
             .read_text(encoding="utf-8").splitlines() if line.strip()]
    docs += [("en", json.loads(line)["text"]) for line in (SHARED / "llamafactory-pretrain-demo" / "c4_demo.jsonl")
             .read_text(encoding="utf-8").splitlines() if line.strip()]
    return docs


def build_corpus(folder: Path, megabytes: float) -> Path:
    """A jsonl of ~`megabytes` MB: the base documents, then shuffled-sentence variants."""
    rng = random.Random(0)
    docs = base_documents()
    path = folder / f"corpus_{megabytes:g}mb.jsonl"
    written, copy = 0, 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < megabytes * 1e6:
            for _, text in docs:
                if copy:
                    sentences = re.split(r"(?<=[.!?。！？])\s*", text)
                    rng.shuffle(sentences)
                    text = " ".join(s for s in sentences if s)
                line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
                handle.write(line)
                written += len(text.encode("utf-8"))
                if written >= megabytes * 1e6:
                    break
            copy += 1
    return path


CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from fullchain.data import DataConfig, SourceConfig, run
from fullchain.data.tokenize_config import TokenizerConfig

if __name__ == "__main__":
    corpus, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    cfg = DataConfig(sources=[SourceConfig(name="mix", path=corpus)],
                     tokenizer=TokenizerConfig(vocab_size=8000))
    started = time.perf_counter()
    metrics = run(cfg, {}, out)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "seconds": seconds,
        "processing_seconds": metrics["processing_seconds"],
        "bytes_in": metrics["bytes_in"],
        "documents_in": metrics["documents_in"],
        "documents_out": metrics["documents_out"],
        "exact": metrics["exact_duplicates_removed"],
        "near": metrics["near_duplicates_removed"],
        "tokens": metrics["tokenize"]["total_tokens"],
        "driver_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "child_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))
"""


def run_stage(corpus: Path, out: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(corpus), str(out)], capture_output=True,
                            text=True, cwd=out.parent)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def filter_baseline(sample_docs: list[str]) -> tuple[float, float]:
    """Seconds for Gopher quality+repetition with datatrove's default splitter vs ours."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

    from fullchain.data.clean import _word_tokenizer

    docs = [Document(text=t, id=str(i)) for i, t in enumerate(sample_docs)]
    timings = []
    for language in ("en", _word_tokenizer("en")):
        filters = [GopherQualityFilter(language=language), GopherRepetitionFilter(language=language)]
        filters[0].filter(docs[0])  # load spaCy outside the timing
        started = time.perf_counter()
        for doc in docs:
            for f in filters:
                f.filter(doc)
        timings.append(time.perf_counter() - started)
    return timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[5.0, 10.0], help="corpus sizes in MB")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"shared data not found at {SHARED}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for size in args.sizes:
            corpus = build_corpus(tmp, size)
            row = run_stage(corpus, tmp / f"out_{size:g}")
            row["size_mb"] = row["bytes_in"] / 1e6
            rows.append(row)
            print(f"{row['size_mb']:.1f} MB: whole stage {row['seconds']:.1f} s = "
                  f"{row['size_mb'] / row['seconds']:.2f} MB/s (clean+dedup+decontam {row['processing_seconds']:.1f} s "
                  f"= {row['size_mb'] / row['processing_seconds']:.2f} MB/s); docs {row['documents_in']} -> "
                  f"{row['documents_out']} (exact dups {row['exact']}, near dups {row['near']}); "
                  f"tokens {row['tokens']}; peak RSS driver {row['driver_peak_mb']:.0f} MB, "
                  f"largest child {row['child_peak_mb']:.0f} MB", flush=True)
        if len(rows) >= 2:
            small, large = rows[0], rows[-1]
            print(f"peak memory ratio {large['size_mb']:.0f} MB / {small['size_mb']:.0f} MB corpus: driver "
                  f"{large['driver_peak_mb'] / small['driver_peak_mb']:.2f}x, child "
                  f"{large['child_peak_mb'] / small['child_peak_mb']:.2f}x (corpus {large['size_mb'] / small['size_mb']:.2f}x)")
    sample = [text for language, text in base_documents() if language == "en"][:150]
    spacy_seconds, ours_seconds = filter_baseline(sample)
    megabytes = sum(len(t.encode("utf-8")) for t in sample) / 1e6
    print(f"Gopher quality+repetition on {megabytes:.2f} MB English: datatrove default spaCy words "
          f"{megabytes / spacy_seconds:.2f} MB/s, ours {megabytes / ours_seconds:.2f} MB/s -> "
          f"{spacy_seconds / ours_seconds:.2f}x")
    print(f"(driver {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
