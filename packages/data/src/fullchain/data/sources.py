"""Sources: find and validate the input files, then read them as a datatrove pipeline step.

Validation (`plan_sources`) runs in the driver process BEFORE any pipeline starts, so a missing
path or an empty file fails in a second, not after the executor has spun up workers. Reading
(`SourceReader`) runs inside datatrove tasks; each task reads its share of "work units"
(`units[rank::world_size]`), so the same plan gives the same documents in the same order on a
laptop and on Slurm.

Bad records: a malformed JSON line, invalid UTF-8 or a missing field raise `SourceError` naming
`file:line` and the field; with `on_error="skip"` they are counted per source and reason instead
(datatrove stats `skipped/<source>/<reason>`, shown in the data card). Empty texts are never
errors, but they are counted too (`skipped/<source>/empty_text`): nothing is dropped silently.
"""
from __future__ import annotations

import bz2
import glob
import gzip
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from fullchain.data.config import SourceConfig, infer_format
from fullchain.data.stdlib_corpus import stdlib_files, stdlib_root

logger = logging.getLogger(__name__)

class SourceError(ValueError):
    """A source path or record that cannot be read; the message names the file (and line)."""


def open_text_bytes(path: str | Path):
    """Open a possibly compressed file for binary reading (.gz / .bz2 by extension)."""
    path = str(path)
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".bz2"):
        return bz2.open(path, "rb")
    return open(path, "rb")


def resolve_files(source: SourceConfig) -> tuple[str, list[Path]]:
    """(format, files) of a source: a file, a glob or a directory (recursive), sorted.

    Raises SourceError naming the path when nothing matches or the format is ambiguous."""
    if source.format == "stdlib":
        files = stdlib_files()
        if not files:
            raise SourceError(f"source {source.name!r}: no standard-library .py files found")
        return "stdlib", files
    path = source.path
    if source.format == "hf_disk":
        folder = Path(path)
        if not folder.is_dir():
            raise SourceError(f"source {source.name!r}: path {path} does not exist or is not a directory "
                              "(format hf_disk needs a `save_to_disk` folder)")
        return "hf_disk", [folder]
    if any(ch in path for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(path, recursive=True) if Path(p).is_file())
        if not files:
            raise SourceError(f"source {source.name!r}: glob {path} matches no files")
    elif Path(path).is_dir():
        files = sorted(p for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith("."))
        if source.format is None and (Path(path) / "dataset_info.json").is_file():
            return "hf_disk", [Path(path)]
        if source.format is not None:
            files = [p for p in files if infer_format(p.name) in (source.format, None)]
        else:
            files = [p for p in files if infer_format(p.name) is not None]
        if not files:
            raise SourceError(f"source {source.name!r}: directory {path} holds no readable files")
    elif Path(path).is_file():
        files = [Path(path)]
    else:
        raise SourceError(f"source {source.name!r}: path {path} does not exist")
    fmt = source.format
    if fmt is None:
        formats = sorted({infer_format(p.name) or "?" for p in files})
        if len(formats) != 1 or formats[0] == "?":
            raise SourceError(f"source {source.name!r}: cannot infer one format from {path} "
                              f"(found {formats}); set `format`")
        fmt = formats[0]
    return fmt, files


def _blank(file: Path, fmt: str) -> str | None:
    """'empty' or 'whitespace-only' when a text file holds no document at all, else None.

    Read only up to the first non-whitespace byte (the first block, for any real file)."""
    if fmt == "hf_disk":
        return None
    if file.stat().st_size == 0:
        return "empty"
    if fmt == "parquet":
        return None
    try:
        with open_text_bytes(file) as handle:
            for block in iter(lambda: handle.read(1 << 16), b""):
                if block.strip():
                    return None
    except (OSError, EOFError):
        return None  # a corrupt archive: the reader reports it with its name
    return "whitespace-only"


def plan_sources(sources: list[SourceConfig], tasks: int, on_error: str) -> tuple[list[dict], dict]:
    """Validate every source and split the work into units for the reader.

    Returns (units, skipped): units are dicts {source, format, files, shard, shards}; skipped
    counts files left out under on_error=skip, per source ({name: {"empty_file": n}})."""
    units: list[dict] = []
    skipped: dict[str, dict[str, int]] = {}
    for source in sources:
        fmt, files = resolve_files(source)
        kept = []
        for file in files:
            blank = _blank(file, fmt)
            if blank:
                if on_error == "skip":
                    skipped.setdefault(source.name, {}).setdefault("empty_file", 0)
                    skipped[source.name]["empty_file"] += 1
                    logger.warning("source %s: skipping %s file %s", source.name, blank, file)
                    continue
                raise SourceError(f"{file}: {blank} file (source {source.name!r}): it holds no document; "
                                  "remove it or set on_error: skip")
            kept.append(str(file))
        if not kept:
            raise SourceError(f"source {source.name!r}: every file under {source.path} is empty or only "
                              "whitespace: no document to read")
        if fmt == "stdlib" and source.max_documents is not None:
            kept = kept[: source.max_documents]  # one file = one document: cap by listing
        base = {"source": source.name, "format": fmt, "config": asdict(source), "shard": 0, "shards": 1}
        if fmt == "hf_disk":
            # one saved dataset splits into contiguous row ranges, one per task (unless capped)
            shards = 1 if source.max_documents is not None else tasks
            units += [dict(base, files=kept, shard=i, shards=shards) for i in range(shards)]
        elif source.max_documents is not None and fmt != "stdlib":
            units.append(dict(base, files=kept))  # a global cap needs one reader
        elif len(kept) < tasks and (fmt in ("jsonl", "parquet") or (fmt == "txt" and source.txt_unit != "file")):
            # fewer files than tasks (tinyshakespeare is one file): every task reads each file and
            # keeps records k with k % tasks == its shard, so one big file still uses every task
            units += [dict(base, files=[file], shard=i, shards=tasks) for file in kept for i in range(tasks)]
        else:
            units += [dict(base, files=[file]) for file in kept]
    return units, skipped


class SourceReader(PipelineStep):
    """datatrove reader for all configured sources; task `rank` reads `units[rank::world_size]`."""

    type = "📖 - READER"
    name = "fullchain sources"

    def __init__(self, units: list[dict], on_error: str = "raise"):
        super().__init__()
        self.units = units
        self.on_error = on_error
        self._shard, self._shards = 0, 1  # of the unit being read

    def _owns(self, number: int) -> bool:
        """Whether record/line `number` of a file split across tasks belongs to this unit."""
        return number % self._shards == self._shard

    # -- error policy ------------------------------------------------------------------------
    def _bad(self, source: str, reason: str, where: str, problem: str) -> None:
        """Raise (on_error=raise) or count one skipped record (on_error=skip)."""
        if self.on_error == "raise":
            raise SourceError(f"{where}: {problem} (source {source!r}; set on_error: skip to count and skip)")
        self.stat_update(f"skipped/{source}/{reason}")
        logger.warning("skipping %s: %s", where, problem)

    def _document(self, source: str, text: str, doc_id: str, where: str) -> Document | None:
        if not text.strip():
            self.stat_update(f"skipped/{source}/empty_text")
            return None
        self.stat_update(f"docs/{source}")
        self.stat_update(f"chars/{source}", value=len(text))
        return Document(text=text, id=doc_id, metadata={"source": source})

    # -- formats -----------------------------------------------------------------------------
    def _lines(self, source: str, file: str) -> Iterator[tuple[int, str]]:
        """(1-based line number, decoded line) of a file; invalid UTF-8 is reported by line."""
        with open_text_bytes(file) as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    if self.on_error == "skip" and not self._owns(number):
                        continue  # a file split across tasks: counted once, by the line's owner
                    self._bad(source, "invalid_utf8", f"{file}:{number}", f"invalid UTF-8 ({exc.reason} at byte {exc.start})")

    def _read_txt(self, unit: dict, cfg: dict, file: str) -> Iterator[Document]:
        source, mode, group = unit["source"], cfg["txt_unit"], cfg["units_per_document"]
        stem = f"{source}/{Path(file).name}"
        pending: list[str] = []  # text units waiting to be grouped into one document
        start_line = 1
        current: list[str] = []  # lines of the paragraph being read
        current_start = 1

        def flush_unit(text: str, line: int):
            nonlocal start_line
            if not pending:
                start_line = line
            pending.append(text)
            if len(pending) == group:
                joined = "\n\n".join(pending) if mode != "line" else "\n".join(pending)
                pending.clear()
                return self._document(source, joined, f"{stem}:{start_line}", f"{file}:{start_line}")
            return None

        if mode == "file":
            text = "".join(line for _, line in self._lines(source, file))
            doc = self._document(source, text, stem, file)
            if doc:
                yield doc
            return
        for number, line in self._lines(source, file):
            if mode == "line":
                if line.strip():
                    doc = flush_unit(line.rstrip("\r\n"), number)
                    if doc:
                        yield doc
                continue
            if line.strip():
                if not current:
                    current_start = number
                current.append(line.rstrip("\r\n"))
            elif current:
                doc = flush_unit("\n".join(current), current_start)
                current = []
                if doc:
                    yield doc
        if current:
            doc = flush_unit("\n".join(current), current_start)
            if doc:
                yield doc
        if pending:  # the last, incomplete group still becomes a document
            joined = "\n\n".join(pending) if mode != "line" else "\n".join(pending)
            doc = self._document(source, joined, f"{stem}:{start_line}", f"{file}:{start_line}")
            if doc:
                yield doc

    def _record_text(self, unit: dict, cfg: dict, record, where: str) -> tuple[str | None, str | None]:
        source, field = unit["source"], cfg["text_field"]
        if not isinstance(record, dict):
            self._bad(source, "not_an_object", where, f"expected a JSON object, got {type(record).__name__}")
            return None, None
        if field not in record:
            self._bad(source, "missing_field", where, f"missing field '{field}' (keys: {sorted(record)[:10]})")
            return None, None
        text = record[field]
        if text is None:
            text = ""
        if not isinstance(text, str):
            self._bad(source, "bad_field_type", where, f"field '{field}' is {type(text).__name__}, not a string")
            return None, None
        id_field = cfg.get("id_field")
        record_id = None
        if id_field:
            if id_field not in record:
                self._bad(source, "missing_field", where, f"missing id field '{id_field}'")
                return None, None
            record_id = f"{source}/{record[id_field]}"
        return text, record_id

    def _record_document(self, unit: dict, cfg: dict, record, where: str, default_id: str):
        """The document of one structured record (jsonl line, parquet or dataset row), or None
        when the record is bad (counted or raised by `_record_text`) or empty."""
        text, record_id = self._record_text(unit, cfg, record, where)
        if text is None:
            return None
        return self._document(unit["source"], text, record_id or default_id, where)

    def _read_jsonl(self, unit: dict, cfg: dict, file: str) -> Iterator[Document]:
        source = unit["source"]
        for number, line in self._lines(source, file):
            if not line.strip() or not self._owns(number):
                continue
            where = f"{file}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                self._bad(source, "malformed_json", where, f"malformed JSON ({exc.msg} at column {exc.colno})")
                continue
            doc = self._record_document(unit, cfg, record, where, f"{source}/{Path(file).name}:{number}")
            if doc:
                yield doc

    def _read_parquet(self, unit: dict, cfg: dict, file: str) -> Iterator[Document]:
        import pyarrow.parquet as pq

        source, field, id_field = unit["source"], cfg["text_field"], cfg.get("id_field")
        parquet = pq.ParquetFile(file)
        names = parquet.schema_arrow.names
        for needed in [field] + ([id_field] if id_field else []):
            if needed not in names:
                raise SourceError(f"{file}: missing column '{needed}' (columns: {names}) (source {source!r})")
        columns = [field] + ([id_field] if id_field else [])
        row = 0
        for batch in parquet.iter_batches(columns=columns, batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                if not self._owns(row):
                    continue
                doc = self._record_document(unit, cfg, record, f"{file}:row {row}",
                                            f"{source}/{Path(file).name}:{row}")
                if doc:
                    yield doc

    def _read_hf_disk(self, unit: dict, cfg: dict, folder: str) -> Iterator[Document]:
        from datasets import Dataset, load_from_disk

        source, field = unit["source"], cfg["text_field"]
        dataset = load_from_disk(folder)
        if not isinstance(dataset, Dataset):
            raise SourceError(f"{folder}: holds a DatasetDict with splits {sorted(dataset)}; point path at one "
                              f"split's folder (source {source!r})")
        if field not in dataset.column_names:
            raise SourceError(f"{folder}: missing column '{field}' (columns: {dataset.column_names}) (source {source!r})")
        total = len(dataset)
        per_shard = -(-total // unit["shards"])
        start = unit["shard"] * per_shard
        stop = min(total, start + per_shard)
        columns = [field] + ([cfg["id_field"]] if cfg.get("id_field") else [])
        part = dataset.select_columns(columns)
        for offset in range(start, stop, 1024):
            batch = part[offset: min(stop, offset + 1024)]
            for index in range(len(batch[field])):
                row = offset + index
                record = {name: batch[name][index] for name in columns}
                doc = self._record_document(unit, cfg, record, f"{folder}:row {row}", f"{source}/{row}")
                if doc:
                    yield doc

    def _read_stdlib(self, unit: dict, cfg: dict, file: str) -> Iterator[Document]:
        root = stdlib_root()
        text = "".join(line for _, line in self._lines(unit["source"], file))
        doc = self._document(unit["source"], text, f"{unit['source']}/{Path(file).relative_to(root).as_posix()}", file)
        if doc:
            yield doc

    def read_unit(self, unit: dict) -> Iterator[Document]:
        cfg = unit["config"]
        reader = {
            "txt": self._read_txt,
            "jsonl": self._read_jsonl,
            "parquet": self._read_parquet,
            "hf_disk": self._read_hf_disk,
            "stdlib": self._read_stdlib,
        }[unit["format"]]
        limit = cfg.get("max_documents") if unit["format"] != "stdlib" else None
        count = 0
        self._shard, self._shards = (unit["shard"], unit["shards"]) if unit["format"] != "hf_disk" else (0, 1)
        by_document = unit["format"] == "txt" and self._shards > 1  # txt: own every shards-th document
        for file in unit["files"]:
            for index, doc in enumerate(reader(unit, cfg, file)):
                if by_document and not self._owns(index):
                    continue
                yield doc
                count += 1
                if limit is not None and count >= limit:
                    return

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        for unit in self.units[rank::world_size]:
            for doc in self.read_unit(unit):
                with self.track_time():
                    self.update_doc_stats(doc)
                yield doc


def read_all(units: list[dict], on_error: str = "raise") -> Iterator[Document]:
    """Every document of a plan in one process (tests, previews)."""
    reader = SourceReader(units, on_error)
    yield from reader.run(None, 0, 1)


__all__ = ["SourceError", "SourceReader", "plan_sources", "resolve_files", "stdlib_files", "read_all",
           "open_text_bytes"]
