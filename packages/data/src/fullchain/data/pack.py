"""Train/load the tokenizer, tokenize and pack the cleaned corpus into Megatron indexed datasets.

Layout written under `out` (only these paths are touched; they are rebuilt from scratch on a
retry, which is cheap next to cleaning and keeps the output byte-identical):

    tokenizer/                    Hugging Face tokenizer (AutoTokenizer.from_pretrained)
    packed/<source>/<split>.bin   token ids, one document per sequence, EOD appended
    packed/<source>/<split>.idx   megatron-core index (IndexedDatasetBuilder)
    dataset.json                  what the pretrain stage reads (schema in `dataset_json`)

Determinism: a document's split depends only on its index in its source and the seed
(`pack_worker.split_of`); batches are written in input order whatever the worker count, so
the same input gives the same bytes with 1 or N workers.
"""
from __future__ import annotations

import collections
import contextlib
import gzip
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fullchain.data import pack_worker
from fullchain.data.config import SOURCE_NAME
from fullchain.data.pack_worker import SPLITS
from fullchain.data.tokenize_config import PackConfig, TokenizerConfig
from fullchain.data.tokenizer import (
    TokenizerInfo,
    copy_pretrained,
    fertility,
    save_hf,
    summary,
    train_bpe,
)

log = logging.getLogger(__name__)

Source = tuple[str, float, list[Path]]
# Token ids below this fit uint16 (65535) with room to spare for ids added later.
_UINT16_VOCAB_LIMIT = 65500


def finalize(tokenizer: TokenizerConfig, pack: PackConfig, sources: Sequence[Source],
             out: Path, num_workers: int, seed: int) -> dict[str, Any]:
    """Tokenizer -> packed splits -> `dataset.json`; returns the metrics (see module doc)."""
    out = Path(out)
    sources = _check_sources(sources)
    if tokenizer.path is not None and Path(tokenizer.path).resolve().is_relative_to(
            (out / "tokenizer").resolve()):
        raise ValueError(f"tokenizer.path: {tokenizer.path} is inside this step's output "
                         f"{out / 'tokenizer'}, which is rebuilt: copy it elsewhere first")
    for stale in ("tokenizer", "packed", "dataset.json"):
        path = out / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    boundaries = pack_worker.split_boundaries(pack.split_fractions())
    phases = {name: _phase(seed, name) for name, _, _ in sources}

    started = time.perf_counter()
    if tokenizer.path is not None:
        info = copy_pretrained(tokenizer, out / "tokenizer")
        train_bytes = 0
    else:
        counter = [0]
        texts = training_texts(sources, boundaries, phases, tokenizer.train_max_bytes, counter)
        info = save_hf(tokenizer, train_bpe(tokenizer, texts), out / "tokenizer")
        train_bytes = counter[0]
    tokenizer_seconds = time.perf_counter() - started
    log.info("tokenizer: vocab %d, eod %d, trained on %.1f MB in %.1f s", info.vocab_size,
             info.eod_id, train_bytes / 1e6, tokenizer_seconds)

    dtype = resolve_dtype(pack.dtype, info.vocab_size)
    started = time.perf_counter()
    packed = pack_sources(info, pack, sources, out, num_workers, boundaries, phases, dtype)
    pack_seconds = time.perf_counter() - started

    write_dataset_json(out, info, dtype, sources, packed["splits"])
    text_bytes = packed["text_bytes"]
    held_out = packed["held_out"]
    return {
        "vocab_size": info.vocab_size,
        "dtype": dtype,
        "eod_id": info.eod_id,
        "tokenizer_train_bytes": train_bytes,
        "tokenizer_seconds": round(tokenizer_seconds, 3),
        "tokens": packed["tokens"],
        "documents": packed["documents"],
        "skipped_documents": packed["skipped"],
        "total_tokens": sum(sum(s.values()) for s in packed["tokens"].values()),
        "total_documents": sum(sum(s.values()) for s in packed["documents"].values()),
        "text_bytes": text_bytes,
        "fertility_en": _rounded(fertility(*held_out.get("en", (0, 0)))),
        "fertility_zh": _rounded(fertility(*held_out.get("zh", (0, 0)))),
        "fertility": {lang: _rounded(fertility(*counts)) for lang, counts in sorted(held_out.items())},
        "fertility_characters": {lang: counts[1] for lang, counts in sorted(held_out.items())},
        "pack_seconds": round(pack_seconds, 3),
        "pack_setup_seconds": round(packed["setup_seconds"], 3),
        "pack_megabytes_per_second": round(text_bytes / 1e6 / pack_seconds, 3)
        if pack_seconds > 0 else None,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def resolve_dtype(dtype: str, vocab_size: int) -> str:
    """The storage dtype name for token ids ("auto" picks the smallest that fits)."""
    if dtype == "auto":
        return "uint16" if vocab_size < _UINT16_VOCAB_LIMIT else "int32"
    if dtype == "uint16" and vocab_size > 65536:
        raise ValueError(f"pack.dtype: uint16 cannot hold ids of a {vocab_size}-token vocabulary")
    return dtype


def _check_sources(sources: Sequence[Source]) -> list[Source]:
    checked: list[Source] = []
    seen: set[str] = set()
    for position, entry in enumerate(sources):
        try:
            name, weight, files = entry
        except (TypeError, ValueError):
            raise ValueError(
                f"sources[{position}]: expected (name, weight, files), got {entry!r}") from None
        # The same rule SourceConfig applies when the spec is converted (long before packing).
        if not isinstance(name, str) or not SOURCE_NAME.match(name):
            raise ValueError(f"sources[{position}]: name {name!r} must match {SOURCE_NAME.pattern}")
        if name in seen:
            raise ValueError(f"sources[{position}]: name {name!r} appears twice")
        seen.add(name)
        if not float(weight) > 0:
            raise ValueError(f"sources[{position}] ({name}): blend weight must be > 0, got {weight}")
        paths = [Path(f) for f in files]
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"sources[{position}] ({name}): {path} does not exist")
        checked.append((name, float(weight), paths))
    if not checked:
        raise ValueError("sources: no source to tokenize")
    return checked


def _phase(seed: int, name: str) -> int:
    """A 64-bit offset of the split sequence, different per source and seed."""
    import hashlib

    digest = hashlib.blake2b(f"{seed}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def iter_lines(files: Sequence[Path]) -> Iterator[tuple[Path, int, bytes]]:
    """(file, 1-based line number, raw line) of every line of the files, in order."""
    for path in files:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                yield path, number, line


def training_texts(sources: Sequence[Source], boundaries: tuple[int, int],
                   phases: dict[str, int], max_bytes: int, counter: list[int]) -> Iterator[str]:
    """Train-split text for the tokenizer: about `max_bytes` UTF-8 bytes in total, shared
    between sources by blend weight; what a small source cannot fill goes to the others.

    Documents are taken whole and in order (the last one of a share may overshoot it), so
    the text and the trained tokenizer are deterministic. `counter[0]` accumulates bytes."""

    def documents(name: str, files: list[Path]) -> Iterator[str]:
        index = 0
        for path, number, line in iter_lines(files):
            if line.strip() and pack_worker.split_of(index, phases[name], boundaries) == 0:
                yield pack_worker.parse_document(line, f"{path}:{number}")["text"]
            index += 1

    active = [(weight, documents(name, files)) for name, weight, files in sources]
    remaining = max_bytes
    while remaining > 0 and active:
        round_budget = remaining
        total_weight = sum(weight for weight, _ in active)
        still_active = []
        for weight, stream in active:
            share = round_budget * weight / total_weight
            used = 0
            exhausted = False
            while used < share:
                text = next(stream, None)
                if text is None:
                    exhausted = True
                    break
                size = len(text.encode("utf-8"))
                used += size
                counter[0] += size
                yield text
            remaining -= used
            if not exhausted:
                still_active.append((weight, stream))
        active = still_active


def pack_sources(info: TokenizerInfo, pack: PackConfig, sources: Sequence[Source], out: Path,
                 num_workers: int, boundaries: tuple[int, int], phases: dict[str, int],
                 dtype: str) -> dict[str, Any]:
    """Tokenize every source into `out/packed/<source>/<split>.{bin,idx}`."""
    options = {
        "boundaries": boundaries,
        "dtype": dtype,
        "eod_id": info.eod_id,
        "append_eod": pack.append_eod,
        "min_document_tokens": pack.min_document_tokens,
    }
    results: dict[str, Any] = {"tokens": {}, "documents": {}, "skipped": {}, "splits": {},
                               "text_bytes": 0, "held_out": {}}
    # Fixed start-up cost, reported apart: megatron-core's import (3-9 s on 2 cores: it pulls in
    # torch and megatron.core; its IndexedDatasetBuilder is the format's reference writer, so
    # we pay it rather than keep a copy of the format) and the workers' start.
    setup_started = time.perf_counter()
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder  # noqa: F401

    pool = None
    if num_workers > 0:
        import multiprocessing

        # spawn: the main process holds torch (megatron) and possibly tokenizers' thread pool;
        # forking either is unsafe. Workers import only numpy + tokenizers.
        with _single_threaded_children():
            pool = multiprocessing.get_context("spawn").Pool(
                num_workers, initializer=pack_worker.init_worker,
                initargs=(str(info.backend_file), options))
    else:
        pack_worker.init_worker(str(info.backend_file), options)
    results["setup_seconds"] = time.perf_counter() - setup_started
    try:
        for name, _, files in sources:
            stats = _pack_source(name, files, pack, phases[name], dtype,
                                 out / "packed" / name, pool, max(num_workers, 1))
            results["tokens"][name] = stats["tokens"]
            results["documents"][name] = stats["documents"]
            results["skipped"][name] = stats["skipped"]
            results["splits"][name] = stats["documents"]
            results["text_bytes"] += stats["text_bytes"]
            for language, (tokens, characters) in stats["held_out"].items():
                counts = results["held_out"].setdefault(language, [0, 0])
                counts[0] += tokens
                counts[1] += characters
            log.info("packed %s: %s documents, %s tokens", name, stats["documents"],
                     stats["tokens"])
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return results


# One worker process = one core. Thread pools inside a worker (tokenizers' rayon, the BLAS
# under numpy that langid uses) only oversubscribe the cores: langid took 21 ms per document
# with OpenBLAS threads on 2 cores, 2.2 ms single-threaded.
_CHILD_ENVIRONMENT = {
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Set the worker environment while the pool spawns its processes, then restore ours."""
    saved = {key: os.environ.get(key) for key in _CHILD_ENVIRONMENT}
    os.environ.update(_CHILD_ENVIRONMENT)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _batches(files: list[Path], size: int,
             max_bytes: int) -> Iterator[tuple[list[bytes], int, int, str]]:
    """(lines, index of the first line in the source, its line number, file) per batch of at
    most `size` lines and about `max_bytes`; a batch never spans two files, so errors can name
    file and line."""
    index = 0
    for path in files:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as handle:
            first_line = 1
            lines: list[bytes] = []
            used = 0
            for line in handle:
                lines.append(line)
                used += len(line)
                if len(lines) == size or used >= max_bytes:
                    yield lines, index, first_line, str(path)
                    index += len(lines)
                    first_line += len(lines)
                    lines = []
                    used = 0
            if lines:
                yield lines, index, first_line, str(path)
                index += len(lines)


def _pack_source(name: str, files: list[Path], pack: PackConfig, phase: int, dtype: str,
                 directory: Path, pool, window: int) -> dict[str, Any]:
    import numpy as np
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    from tqdm import tqdm

    directory.mkdir(parents=True, exist_ok=True)
    builders = [IndexedDatasetBuilder(str(directory / f"{split}.bin"), dtype=np.dtype(dtype).type)
                for split in SPLITS]
    documents = [0, 0, 0]
    tokens = [0, 0, 0]
    stats: dict[str, Any] = {"skipped": 0, "text_bytes": 0, "held_out": {}}

    def write(result: pack_worker.BatchResult) -> None:
        for split, builder in enumerate(builders):
            ids = np.frombuffer(result.ids[split], dtype=dtype)
            position = 0
            for length in result.lengths[split]:
                builder.add_document(ids[position:position + length], [length])
                position += length
            documents[split] += len(result.lengths[split])
            tokens[split] += int(ids.size)
        stats["skipped"] += result.skipped
        stats["text_bytes"] += result.text_bytes
        for language, (count, characters) in result.held_out.items():
            counts = stats["held_out"].setdefault(language, [0, 0])
            counts[0] += count
            counts[1] += characters

    # At most 2 batches per worker in flight: workers never wait for input, and memory is
    # bounded by the window, not by the corpus size.
    pending: collections.deque = collections.deque()
    progress = tqdm(desc=f"tokenize+pack {name}", unit="doc", mininterval=5, file=sys.stderr)
    try:
        for lines, first_index, first_line, file in _batches(files, pack.encode_batch_size,
                                                             pack.encode_batch_bytes):
            arguments = (lines, first_index, first_line, file, phase)
            if pool is None:
                write(pack_worker.encode_batch(*arguments))
                progress.update(len(lines))
                continue
            pending.append((len(lines), pool.apply_async(pack_worker.encode_batch, arguments)))
            if len(pending) >= 2 * window:
                count, task = pending.popleft()
                write(task.get())
                progress.update(count)
        while pending:
            count, task = pending.popleft()
            write(task.get())
            progress.update(count)
    finally:
        progress.close()

    for split, builder in zip(SPLITS, builders):
        builder.finalize(str(directory / f"{split}.idx"))
    for split, count in zip(SPLITS, documents):
        if count == 0:
            (directory / f"{split}.bin").unlink()
            (directory / f"{split}.idx").unlink()
    stats["documents"] = dict(zip(SPLITS, documents))
    stats["tokens"] = dict(zip(SPLITS, tokens))
    return stats


def write_dataset_json(out: Path, info: TokenizerInfo, dtype: str, sources: Sequence[Source],
                       documents: dict[str, dict[str, int]]) -> Path:
    """`out/dataset.json` (core's packed_corpus contract): the packed prefixes per split with
    renormalised blend weights."""
    from fullchain.core.contracts import PackedSplit, write_packed_corpus

    splits: dict[str, PackedSplit] = {}
    for split in SPLITS:
        prefixes, weights, num_tokens, num_documents = [], [], [], []
        for name, weight, _ in sources:
            count = documents[name][split]
            if count == 0:
                continue
            prefix = f"packed/{name}/{split}"
            prefixes.append(prefix)
            weights.append(weight)
            num_documents.append(count)
            num_tokens.append(_count_tokens(out / prefix, dtype))
        total = sum(weights)
        splits[split] = PackedSplit(prefixes=prefixes, weights=[w / total for w in weights],
                                    num_tokens=num_tokens, num_documents=num_documents)
    return write_packed_corpus(out, dtype=dtype, splits=splits, **summary(info))


def _count_tokens(prefix: Path, dtype: str) -> int:
    """Tokens in a packed .bin (its size over the item size): what was really written."""
    import numpy as np

    return Path(f"{prefix}.bin").stat().st_size // np.dtype(dtype).itemsize


__all__ = ["finalize", "resolve_dtype", "training_texts"]
