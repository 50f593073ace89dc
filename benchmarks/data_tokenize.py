"""Tokenize+pack throughput of the data stage vs raw `tokenizers` encoding (the floor cost).

Same text (~10 MB of the real corpora in ../shared/data, English + Chinese; Python's own
stdlib sources when that folder is absent), same tokenizer, same number of processes:

- baseline: a spawn pool of N processes, one serial `Tokenizer.encode_batch` per process,
  batches of in-memory strings sent from the main process — encoding and nothing else;
- ours: `fullchain.data.pack.pack_sources`, i.e. read the cleaned `*.jsonl.gz` files, parse,
  encode, turn ids into arrays, write `.bin/.idx` with megatron-core's IndexedDatasetBuilder.

Both include starting their pool. megatron-core's import (seconds, once per stage process) is
done before either clock starts and printed separately.

    .venv/bin/python benchmarks/data_tokenize.py [--megabytes 10] [--workers 2] [--vocab 32000]
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FULLCHAIN_SHARED_DATA", REPO.parent / "shared" / "data"))


def corpus_documents() -> list[str]:
    """Real English and Chinese documents from the shared data folder, or stdlib sources."""
    documents: list[str] = []
    if SHARED.is_dir():
        demo = SHARED / "llamafactory-pretrain-demo"
        documents += [json.loads(line)["text"] for line in open(demo / "c4_demo.jsonl")]
        documents += [t for t in (demo / "wiki_demo.txt").read_text().split("\n") if t.strip()]
        zh = (SHARED / "chinese-poetry" / "zh_classics.txt").read_text()
        documents += [t for t in zh.split("\n\n") if t.strip()]
        shakespeare = (SHARED / "tinyshakespeare" / "input.txt")
        if shakespeare.is_file():
            documents += [t for t in shakespeare.read_text().split("\n\n") if t.strip()]
        for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json"):
            path = SHARED / "llamafactory-sft-demo" / name
            if path.is_file():
                for record in json.loads(path.read_text()):
                    documents.append("\n".join(str(record.get(k, "")) for k in
                                               ("instruction", "input", "output")).strip())
    if not documents:
        import sysconfig

        for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
            documents.append(path.read_text(encoding="utf-8", errors="replace"))
    return [d for d in documents if d]


def take_megabytes(documents: list[str], megabytes: float) -> list[str]:
    """Cycle through the documents until `megabytes` of UTF-8 text."""
    chosen, size, index = [], 0, 0
    while size < megabytes * 1e6:
        text = documents[index % len(documents)]
        chosen.append(text)
        size += len(text.encode("utf-8"))
        index += 1
    return chosen


def language(text: str) -> str:
    """"zh" for mostly-Han text, else "en" (the corpora used here hold only these two)."""
    sample = text[:2000]
    han = sum(1 for ch in sample if "\u4e00" <= ch <= "\u9fff")
    return "zh" if han > 0.3 * max(1, sum(ch.isalpha() for ch in sample)) else "en"


_TOKENIZER = None


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the pools' workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(function, *arguments, **keywords) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a call."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    function(*arguments, **keywords)
    return time.perf_counter() - wall, cpu_seconds() - cpu


def _init_baseline(tokenizer_file: str) -> None:
    global _TOKENIZER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    _TOKENIZER = Tokenizer.from_file(tokenizer_file)


def _encode_only(texts: list[str]) -> int:
    return len(_TOKENIZER.encode_batch(texts, add_special_tokens=False))


def _encode_fast_only(texts: list[str]) -> int:
    return len(_TOKENIZER.encode_batch_fast(texts, add_special_tokens=False))


def baseline(texts: list[str], tokenizer_file: Path, workers: int, batch: int,
             fast: bool = False) -> float:
    """Seconds for raw encode_batch (or encode_batch_fast: no offsets) over `texts` in a pool
    of `workers` processes."""
    started = time.perf_counter()
    pool = multiprocessing.get_context("spawn").Pool(
        workers, initializer=_init_baseline, initargs=(str(tokenizer_file),))
    pending: collections.deque = collections.deque()
    encoded = 0
    function = _encode_fast_only if fast else _encode_only
    for first in range(0, len(texts), batch):
        pending.append(pool.apply_async(function, (texts[first:first + batch],)))
        if len(pending) >= 2 * workers:
            encoded += pending.popleft().get()
    while pending:
        encoded += pending.popleft().get()
    pool.terminate()
    pool.join()
    assert encoded == len(texts)
    return time.perf_counter() - started


def ours(files: list[Path], info, workers: int, batch: int, out: Path) -> float:
    """Seconds for the stage's tokenize+pack path over the same documents."""
    from fullchain.data import pack, pack_worker
    from fullchain.data.tokenize_config import PackConfig

    cfg = PackConfig(split="98,1,1", encode_batch_size=batch)
    boundaries = pack_worker.split_boundaries(cfg.split_fractions())
    dtype = pack.resolve_dtype(cfg.dtype, info.vocab_size)
    started = time.perf_counter()
    pack.pack_sources(info, cfg, [("bench", 1.0, files)], out, workers, boundaries,
                      {"bench": 0}, dtype)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch", type=int, default=2000, help="documents per batch")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # the stage's progress bars: noise here

    from fullchain.data.tokenize_config import TokenizerConfig
    from fullchain.data.tokenizer import save_hf, train_bpe

    texts = take_megabytes(corpus_documents(), args.megabytes)
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        cfg = TokenizerConfig(vocab_size=args.vocab)
        # Train on the distinct documents only (at most ~4 MB): the benchmark is about encoding.
        distinct = list(dict.fromkeys(texts))
        info = save_hf(cfg, train_bpe(cfg, iter(take_megabytes(distinct, min(4.0, megabytes))
                                                if len(distinct) > 1 else distinct)),
                       scratch / "tokenizer")
        print(f"tokenizer: vocab {info.vocab_size}, trained in {time.perf_counter() - started:.1f} s")

        files = []
        per_file = (len(texts) + 3) // 4
        for part in range(4):
            path = scratch / "cleaned" / f"{part:05d}.jsonl.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(path, "wt", encoding="utf-8") as handle:
                for index, text in enumerate(texts[part * per_file:(part + 1) * per_file]):
                    # The cleaning step labels every document's language; so do we.
                    record = {"text": text, "id": f"{part}/{index}",
                              "metadata": {"language": language(text)}}
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            files.append(path)

        started = time.perf_counter()
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder  # noqa: F401

        print(f"megatron-core import (fixed cost, excluded): {time.perf_counter() - started:.1f} s")
        print(f"text: {megabytes:.2f} MB, {len(texts)} documents; {args.workers} processes")

        # Interleaved repeats, best of each: the machine is shared and wall-clock timings drift
        # with other load, so CPU seconds (main process + workers) are reported too.
        runs = {"encode_batch": [], "encode_batch_fast": [], "ours": []}
        for repeat in range(args.repeats):
            runs["encode_batch"].append(timed(baseline, texts, info.backend_file, args.workers,
                                              args.batch))
            runs["encode_batch_fast"].append(timed(baseline, texts, info.backend_file,
                                                   args.workers, args.batch, fast=True))
            runs["ours"].append(timed(ours, files, info, args.workers, args.batch,
                                      scratch / f"packed{repeat}"))
        wall = {name: min(w for w, _ in values) for name, values in runs.items()}
        cpu = {name: min(c for _, c in values) for name, values in runs.items()}
        for name, label in (("encode_batch", "baseline encode_batch pool"),
                            ("encode_batch_fast", "baseline encode_batch_fast pool"),
                            ("ours", "ours tokenize+pack")):
            print(f"{label:32s}: {megabytes / wall[name]:6.2f} MB/s wall ({wall[name]:.2f} s), "
                  f"{megabytes / cpu[name]:6.2f} MB per CPU-second")
        for name in ("encode_batch", "encode_batch_fast"):
            print(f"ratio ours/{name:18s}: {wall[name] / wall['ours']:.2f} wall-clock "
                  f"(goal >= 0.7), {cpu[name] / cpu['ours']:.2f} CPU-time")

if __name__ == "__main__":
    sys.exit(main())
