"""Benchmark of the whole data stage (fullchain.data.run) against a pure-I/O floor, at two sizes.

For each corpus size (default ~5 and ~10 MB), on the same text, in separate child processes:
  ours   the whole stage: read -> normalise/PII/language/quality -> exact + MinHash dedup ->
         13-gram decontamination against the shared eval sets -> BPE tokenizer (8k) -> tokenize +
         pack Megatron .bin/.idx -> data card;
  floor  datatrove `JsonlReader -> JsonlWriter` (gzip, as the stage writes its cleaned files) of
         the same files with the same executor (LocalPipelineExecutor, tasks=2, workers=2): the
         cost of just moving the corpus through datatrove.
Prints wall seconds, MB/s of raw input, CPU seconds of all processes (this machine is shared:
CPU seconds are the steadier figure), peak RSS of the driver and of the largest worker, the ratio
ours/floor, and how peak memory changes from the small to the large corpus (the stage streams
documents through tasks; memory must not follow the corpus size).

Also: the Gopher quality + repetition filters, datatrove's own vs fullchain's fast versions
(identical results; tests/test_fastfilters.py), on the same English text.

The corpus is built from ../shared/data (tinyshakespeare, classical Chinese, wiki and C4 samples:
~3.9 MB) repeated with variation (every copy after the first shuffles the sentences of each
document), so near-duplicate removal takes out most copies; it is written as 2 jsonl files.

    .venv/bin/python benchmarks/data_stage.py [--sizes 5 10]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FULLCHAIN_SHARED_DATA", REPO.parent / "shared" / "data"))

# the eval sets conf/data/shakespeare_zh.yaml decontaminates against
BENCHMARKS = [
    ("gsm8k", "gsm8k/test.jsonl", ["question", "answer"]),
    ("arc_challenge", "arc/arc_challenge.jsonl", ["query"]),
    ("boolq", "boolq/boolq.jsonl", ["query"]),
    ("mmlu", "mmlu/test/*.csv", ["question", "choice0", "choice1", "choice2", "choice3"]),
    ("cmmlu", "cmmlu/test/*.csv", ["Question", "A", "B", "C", "D"]),
]


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
    """A folder of 2 jsonl files holding ~`megabytes` MB of text: the base documents, then
    shuffled-sentence variants (documents alternate between the files)."""
    rng = random.Random(0)
    docs = base_documents()
    folder = folder / f"corpus_{megabytes:g}mb"
    folder.mkdir(parents=True, exist_ok=True)
    handles = [open(folder / f"part{i}.jsonl", "w", encoding="utf-8") for i in range(2)]
    written, copy, count = 0, 0, 0
    try:
        while written < megabytes * 1e6:
            for _, text in docs:
                if copy:
                    sentences = re.split(r"(?<=[.!?。！？])\s*", text)
                    rng.shuffle(sentences)
                    text = " ".join(s for s in sentences if s)
                handles[count % 2].write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                count += 1
                written += len(text.encode("utf-8"))
                if written >= megabytes * 1e6:
                    break
            copy += 1
    finally:
        for handle in handles:
            handle.close()
    return folder


# Both children report CPU seconds of themselves + their (waited-for) children, and peak RSS of
# themselves (the driver) and of their largest child (a datatrove or packing worker).
USAGE = r"""
import resource
def usage():
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_seconds": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
            "driver_peak_mb": me.ru_maxrss / 1024, "child_peak_mb": kids.ru_maxrss / 1024}
"""

STAGE = USAGE + r"""
import json, sys, time
from pathlib import Path
from fullchain.data import DataConfig, SourceConfig, run
from fullchain.data.config import BenchmarkConfig, DecontaminationConfig
from fullchain.data.tokenize_config import TokenizerConfig

if __name__ == "__main__":
    corpus, out, benchmarks = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    cfg = DataConfig(sources=[SourceConfig(name="mix", path=corpus + "/*.jsonl", format="jsonl")],
                     tokenizer=TokenizerConfig(vocab_size=8000),
                     decontamination=DecontaminationConfig(benchmarks=[
                         BenchmarkConfig(name=n, path=p, text_fields=f) for n, p, f in benchmarks]))
    started = time.perf_counter()
    metrics = run(cfg, {}, out)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "seconds": seconds, "processing_seconds": metrics["processing_seconds"],
        "bytes_in": metrics["bytes_in"], "documents_in": metrics["documents_in"],
        "documents_out": metrics["documents_out"], "exact": metrics["exact_duplicates_removed"],
        "near": metrics["near_duplicates_removed"], "contaminated": metrics.get("contaminated_documents"),
        "tokens": metrics["tokenize"]["total_tokens"], **usage()}))
"""

FLOOR = USAGE + r"""
import json, sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

if __name__ == "__main__":
    corpus, out = sys.argv[1], sys.argv[2]
    started = time.perf_counter()
    LocalPipelineExecutor([JsonlReader(corpus, glob_pattern="*.jsonl"),
                           JsonlWriter(out + "/data", output_filename="${rank}.jsonl.gz")],
                          tasks=2, workers=2, logging_dir=out + "/logs", start_method="fork").run()
    print(json.dumps({"seconds": time.perf_counter() - started, **usage()}))
"""


def run_child(code: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def filter_baseline(sample_docs: list[str]) -> tuple[float, float, float]:
    """CPU seconds of Gopher quality+repetition: datatrove's filters with their default words
    (spaCy), datatrove's filters with our words, our fast filters with our words."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from fullchain.data.clean import _word_tokenizer
    from fullchain.data.fastfilters import FastGopherQualityFilter, FastGopherRepetitionFilter

    ours = _word_tokenizer("en")
    variants = [(GopherQualityFilter, GopherRepetitionFilter, "en"),
                (GopherQualityFilter, GopherRepetitionFilter, ours),
                (FastGopherQualityFilter, FastGopherRepetitionFilter, ours)]
    timings = []
    for quality, repetition, language in variants:
        filters = [quality(language=language), repetition(language=language)]
        filters[0].filter(Document(text="warm up spaCy", id="0"))
        # fresh Document objects: datatrove caches word splits per text object
        docs = [Document(text="".join(list(t)), id=str(i)) for i, t in enumerate(sample_docs)]
        started = time.process_time()
        for doc in docs:
            for f in filters:
                f.filter(doc)
        timings.append(time.process_time() - started)
    return timings[0], timings[1], timings[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[5.0, 10.0], help="corpus sizes in MB")
    parser.add_argument("--stage-only", action="store_true", help="skip the Gopher filter comparison")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"shared data not found at {SHARED}")
    benchmarks = [(n, str(SHARED / p), f) for n, p, f in BENCHMARKS if list(SHARED.glob(p))]
    print(f"decontaminating against {[n for n, _, _ in benchmarks]}; machine: {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for size in args.sizes:
            corpus = build_corpus(tmp, size)
            floor = run_child(FLOOR, str(corpus), str(tmp / f"floor_{size:g}"))
            row = run_child(STAGE, str(corpus), str(tmp / f"out_{size:g}"), json.dumps(benchmarks))
            row["size_mb"] = megabytes = row["bytes_in"] / 1e6
            row["floor"] = floor
            rows.append(row)
            print(f"{megabytes:.1f} MB, docs {row['documents_in']} -> {row['documents_out']} (exact dups "
                  f"{row['exact']}, near dups {row['near']}, contaminated {row['contaminated']}), "
                  f"{row['tokens']} tokens:\n"
                  f"  whole stage   {row['seconds']:6.1f} s = {megabytes / row['seconds']:5.2f} MB/s, "
                  f"CPU {row['cpu_seconds']:6.1f} s (clean+dedup+decontam {row['processing_seconds']:.1f} s); "
                  f"peak RSS driver {row['driver_peak_mb']:.0f} MB, largest worker {row['child_peak_mb']:.0f} MB\n"
                  f"  floor (datatrove JsonlReader -> JsonlWriter, same executor) {floor['seconds']:5.1f} s = "
                  f"{megabytes / floor['seconds']:5.2f} MB/s, CPU {floor['cpu_seconds']:5.1f} s; peak RSS "
                  f"driver {floor['driver_peak_mb']:.0f} MB, largest worker {floor['child_peak_mb']:.0f} MB\n"
                  f"  whole stage / floor: {row['seconds'] / floor['seconds']:.1f}x wall, "
                  f"{row['cpu_seconds'] / floor['cpu_seconds']:.1f}x CPU", flush=True)
        if len(rows) >= 2:
            small, large = rows[0], rows[-1]
            print(f"peak memory {large['size_mb']:.0f} MB vs {small['size_mb']:.0f} MB corpus "
                  f"(corpus {large['size_mb'] / small['size_mb']:.2f}x): driver "
                  f"{large['driver_peak_mb'] / small['driver_peak_mb']:.2f}x, largest worker "
                  f"{large['child_peak_mb'] / small['child_peak_mb']:.2f}x")
    if args.stage_only:
        return
    sample = [text for language, text in base_documents() if language == "en"][:150]
    spacy_seconds, words_seconds, fast_seconds = filter_baseline(sample)
    megabytes = sum(len(t.encode("utf-8")) for t in sample) / 1e6
    print(f"Gopher quality+repetition on {megabytes:.2f} MB English (CPU): datatrove + spaCy words "
          f"{megabytes / spacy_seconds:.2f} MB/s, datatrove + our words {megabytes / words_seconds:.2f} MB/s, "
          f"fast filters + our words {megabytes / fast_seconds:.2f} MB/s "
          f"({spacy_seconds / fast_seconds:.1f}x and {words_seconds / fast_seconds:.1f}x)")


if __name__ == "__main__":
    main()
