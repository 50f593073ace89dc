"""Decontamination: find training documents sharing a long n-gram with an evaluation item.

The driver builds one index of every benchmark item's n-gram hashes (`build_index`, written to
`work/decontam_index.npz`); the datatrove step `Decontaminate` checks each document against it,
drops (or flags) the contaminated ones and writes which items it matched to
`work/decontam/<rank>.jsonl`; `summarize` turns those into `decontamination.json`, which the
eval stage reads to report contamination next to its scores.

n-grams are over the same tokens as MinHash (lower-cased words; one token per CJK character), 13
by default as in GPT-3. An n-gram's hash is a polynomial rolling hash of 64-bit token hashes, so
a document's n-grams are hashed in a few numpy operations instead of one Python call each.
Items shorter than n tokens cannot be matched this way; they are counted (`items_too_short`).
"""
from __future__ import annotations

import csv
import glob
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from fullchain.core.schema import benchmark_item_id
from fullchain.data.config import BenchmarkConfig
from fullchain.data.dedup import shingle_tokens
from fullchain.data.sources import SourceError, open_text_bytes

logger = logging.getLogger(__name__)

_MULTIPLIER = np.uint64(0x100000001B3)  # FNV-64 prime: odd, so the rolling hash mixes well


def ngram_hashes(tokens: list[str], n: int) -> np.ndarray:
    """uint64 hashes of every n-token window (empty when there are fewer than n tokens)."""
    import xxhash

    count = len(tokens) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    token_hashes = np.fromiter((xxhash.xxh64_intdigest(t) for t in tokens), dtype=np.uint64, count=len(tokens))
    acc = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            acc = acc * _MULTIPLIER + token_hashes[k: k + count]
    return acc


def benchmark_files(benchmark: BenchmarkConfig) -> list[Path]:
    """The files of a benchmark (a file or a glob), sorted; SourceError if none exist."""
    if any(ch in benchmark.path for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(benchmark.path, recursive=True) if Path(p).is_file())
    else:
        files = [Path(benchmark.path)] if Path(benchmark.path).is_file() else []
    if not files:
        raise SourceError(f"decontamination benchmark {benchmark.name!r}: path {benchmark.path} matches no files")
    return files


def _six_line_items(file: Path, content: str, benchmark: BenchmarkConfig) -> Iterator[tuple[int, dict]]:
    """llama.cpp's multiple-choice text (its HellaSwag copy): 6 lines per item, "<label>: <context>",
    the gold index, 4 endings. (first line number, {query, gold, endings}); the eval stage names
    an item by the same first line."""
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise SourceError(f"{file}:{len(lines)}: {len(lines)} lines is not a whole number of 6-line items "
                          f"(context, gold, 4 endings; benchmark {benchmark.name!r}): truncated?")
    for start in range(0, len(lines), 6):
        context, gold, *endings = lines[start:start + 6]
        yield start + 1, {"query": context, "gold": gold, "endings": "\n".join(endings)}


def iter_items(benchmark: BenchmarkConfig) -> Iterator[tuple[str, str]]:
    """(item id, text) of every item of a benchmark; a missing field raises naming file:line."""
    for file in benchmark_files(benchmark):
        name = file.name
        stem = name.removesuffix(".gz").removesuffix(".bz2")
        with open_text_bytes(file) as handle:
            raw = handle.read()
        try:
            content = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SourceError(f"{file}: invalid UTF-8 at byte {exc.start} (benchmark {benchmark.name!r})") from None
        if stem.endswith(".csv"):
            rows = ((number, row) for number, row in enumerate(csv.DictReader(io.StringIO(content)), start=2))
        elif stem.endswith(".json"):
            data = json.loads(content)
            rows = enumerate(data if isinstance(data, list) else [data], start=1)
        elif stem.endswith(".txt"):
            rows = _six_line_items(file, content, benchmark)
        else:
            rows = ((number, json.loads(line)) for number, line in enumerate(content.splitlines(), start=1)
                    if line.strip())
        for number, record in rows:
            where = f"{file}:{number}"
            missing = [f for f in benchmark.text_fields if f not in record]
            if missing:
                raise SourceError(f"{where}: benchmark {benchmark.name!r} item has no field(s) {missing} "
                                  f"(fields: {sorted(record)[:12]})")
            text = "\n".join(str(record[f]) for f in benchmark.text_fields if record[f] is not None)
            if benchmark.id_field:
                if benchmark.id_field not in record:
                    raise SourceError(f"{where}: benchmark {benchmark.name!r} item has no id field "
                                      f"'{benchmark.id_field}'")
                item_id = str(record[benchmark.id_field])
            else:
                item_id = benchmark_item_id(name, number)
            yield item_id, text


def build_index(benchmarks: list[BenchmarkConfig], n: int, out: Path) -> dict:
    """Hash every benchmark item's n-grams into `out` (.npz: hashes sorted, item index per hash)
    and `out`.items.json (benchmark, item id per index). Returns per-benchmark item counts."""
    hashes, owners = [], []
    items: list[tuple[str, str]] = []
    summary: dict[str, dict] = {}
    for benchmark in benchmarks:
        counts = {"items": 0, "items_too_short": 0, "ngrams": 0}
        for item_id, text in iter_items(benchmark):
            counts["items"] += 1
            grams = ngram_hashes(shingle_tokens(text), n)
            if grams.size == 0:
                counts["items_too_short"] += 1
                continue
            grams = np.unique(grams)
            hashes.append(grams)
            owners.append(np.full(grams.size, len(items), dtype=np.uint32))
            items.append((benchmark.name, item_id))
            counts["ngrams"] += int(grams.size)
        summary[benchmark.name] = counts
    all_hashes = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
    all_owners = np.concatenate(owners) if owners else np.zeros(0, dtype=np.uint32)
    order = np.argsort(all_hashes, kind="stable")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, hashes=all_hashes[order], owners=all_owners[order])
    Path(f"{out}.items.json").write_text(json.dumps(items), encoding="utf-8")
    return summary


class Decontaminate(PipelineStep):
    """Drop (or flag) documents sharing an n-gram with a benchmark item; log the matches."""

    type = "🧹 - DECONT"
    name = "fullchain decontamination"

    def __init__(self, index_path: str, matches_folder: str, n: int, action: str = "drop"):
        super().__init__()
        self.index_path = index_path
        self.matches_folder = matches_folder
        self.n = n
        self.action = action
        self._index: tuple[np.ndarray, np.ndarray] | None = None

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            with np.load(self.index_path) as arrays:
                self._index = (arrays["hashes"], arrays["owners"])
        return self._index

    def matched_items(self, text: str) -> list[int]:
        """Indices of the benchmark items sharing at least one n-gram with `text`, sorted."""
        hashes, owners = self.load()
        if hashes.size == 0:
            return []
        grams = ngram_hashes(shingle_tokens(text), self.n)
        if grams.size == 0:
            return []
        positions = np.searchsorted(hashes, grams)
        positions[positions >= hashes.size] = hashes.size - 1
        found = grams[hashes[positions] == grams]
        if found.size == 0:
            return []
        result: set[int] = set()
        for value in np.unique(found):  # a hash may belong to several items: take them all
            lo, hi = np.searchsorted(hashes, value, side="left"), np.searchsorted(hashes, value, side="right")
            result.update(int(i) for i in owners[lo:hi])
        return sorted(result)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        folder = Path(self.matches_folder)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{rank:05d}.jsonl", "w", encoding="utf-8") as log:
            for doc in data:
                source = doc.metadata.get("source", "?")
                self.stat_update(f"in/{source}")
                self.stat_update(f"chars_in/{source}", value=len(doc.text))
                with self.track_time():
                    matched = self.matched_items(doc.text)
                if matched:
                    log.write(json.dumps({"id": doc.id, "source": source, "items": matched}) + "\n")
                    self.stat_update(f"contaminated/{source}")
                    if self.action == "drop":
                        self.stat_update(f"dropped/{source}/contaminated")
                        self.stat_update(f"chars_dropped/{source}", value=len(doc.text))
                        continue
                    doc.metadata["contaminated"] = True
                self.stat_update(f"out/{source}")
                self.stat_update(f"chars_out/{source}", value=len(doc.text))
                yield doc


def summarize(index_path: Path, matches_folder: Path, index_summary: dict, n: int, action: str) -> dict:
    """decontamination.json: per benchmark, the items found in training data and by which documents."""
    items = json.loads(Path(f"{index_path}.items.json").read_text(encoding="utf-8")) if index_summary else []
    found: dict[str, dict[str, list[str]]] = {name: {} for name in index_summary}
    documents = 0
    for file in sorted(Path(matches_folder).glob("*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            documents += 1
            for item in record["items"]:
                benchmark, item_id = items[item]
                found[benchmark].setdefault(item_id, []).append(record["id"])
    benchmarks = {}
    for name, counts in index_summary.items():
        hits = found.get(name, {})
        benchmarks[name] = {
            **counts,
            "items_found": len(hits),
            "fraction_found": round(len(hits) / counts["items"], 6) if counts["items"] else 0.0,
            "found_item_ids": sorted(hits),
            "documents_per_item": {item: sorted(docs) for item, docs in sorted(hits.items())},
        }
    return {"ngram_size": n, "action": action, "contaminated_documents": documents, "benchmarks": benchmarks}
