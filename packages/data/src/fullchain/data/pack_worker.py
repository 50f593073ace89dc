"""The per-process half of packing: JSON lines in, token id arrays out.

Kept apart from `pack.py` so that worker processes (started with "spawn") import only
tokenizers and the standard library, never torch or megatron (or numpy: ~0.2 s per start).

Measured on the 2-core dev machine (c4 + wiki + classical Chinese, 8k vocab): one process
running `encode_batch_fast` serially reaches ~4.7 MB/s, while letting `tokenizers` spread one
batch over 2 threads reached only ~3.9 MB/s, and turning Encoding objects into a typed array
costs < 5% once every process does it for its own batches. So: one serial tokenizer per
process, all per-document Python work inside the workers, the main process only reads
lines and appends finished arrays.
"""
from __future__ import annotations

import json
import os
import unicodedata
from array import array
from dataclasses import dataclass, field
from typing import Any

from fullchain.data.language import guess_language

SPLITS = ("train", "valid", "test")

# Split assignment: document i of a source goes to the split whose interval of [0, 1) holds
# frac(phase + i * golden ratio), computed in 64-bit integers so it is exact and identical on
# every machine. The Weyl sequence is equidistributed with low discrepancy: after n documents
# every split holds n * fraction documents give or take a few, interleaved over the whole
# source (valid/test are not just its tail), and document i's split depends on i alone — not
# on batch size or worker count.
_GOLDEN_64 = 0x9E3779B97F4A7C15
_MASK_64 = (1 << 64) - 1


def split_boundaries(fractions: tuple[float, float, float]) -> tuple[int, int]:
    """Integer upper bounds of the train and valid intervals of [0, 2**64)."""
    train, valid, _ = fractions
    first = min(int(train * (1 << 64)), 1 << 64)
    second = min(int((train + valid) * (1 << 64)), 1 << 64)
    if fractions[2] == 0:
        second = 1 << 64
    if valid == 0 and fractions[2] == 0:
        first = 1 << 64
    return first, second


def split_of(index: int, phase: int, boundaries: tuple[int, int]) -> int:
    """0 (train), 1 (valid) or 2 (test) for document `index` of a source."""
    point = (phase + index * _GOLDEN_64) & _MASK_64
    if point < boundaries[0]:
        return 0
    return 1 if point < boundaries[1] else 2


def parse_document(line: bytes, where: str) -> dict[str, Any]:
    """One datatrove JSONL record; errors name the file and line."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: not a JSON document: {exc}") from None
    if not isinstance(record, dict):
        raise ValueError(f'{where}: a JSON object with a string "text" field is expected')
    if "text" not in record and "id" in record:
        # datatrove's writers leave out falsy fields: an empty document has no "text".
        record["text"] = ""
    if not isinstance(record.get("text"), str):
        raise ValueError(f'{where}: a JSON object with a string "text" field is expected')
    return record


def document_language(record: dict[str, Any]) -> str | None:
    """The ISO 639-1 language recorded by the cleaning step ("zh_Hans" -> "zh"), if any."""
    metadata = record.get("metadata")
    language = metadata.get("language") if isinstance(metadata, dict) else None
    if language is None:
        language = record.get("language")
    if not isinstance(language, str) or not language:
        return None
    return language.replace("-", "_").split("_")[0].lower()


@dataclass
class BatchResult:
    """Token ids of one batch, grouped by split, plus counters for the metrics."""

    ids: list[array] = field(default_factory=list)
    """Per split: all documents' ids (EOD included) concatenated, in the storage dtype."""
    lengths: list[array] = field(default_factory=list)
    """Per split: the length of each document in `ids`."""
    text_bytes: int = 0
    """UTF-8 bytes of the documents' text."""
    skipped: int = 0
    """Documents dropped for having fewer than `min_document_tokens` tokens."""
    held_out: dict[str, list[int]] = field(default_factory=dict)
    """language -> [tokens, characters] over valid/test documents (for fertility)."""


# numpy dtype name -> array typecode of the same width (checked in `init_worker`).
_TYPECODES = {"uint16": "H", "int32": "i"}

# Set once per worker process by `init_worker`.
_STATE: dict[str, Any] = {}


def init_worker(tokenizer_file: str, options: dict[str, Any]) -> None:
    """Pool initializer: load the tokenizer once per process, serial encoding."""
    # One process = one core; rayon threads inside each process only oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from fullchain.data.tokenizer import load_backend

    _STATE["tokenizer"] = load_backend(tokenizer_file)
    _STATE.update(options)
    if "dtype" in options:
        typecode = _TYPECODES[options["dtype"]]
        assert array(typecode).itemsize == (2 if typecode == "H" else 4)
        _STATE["typecode"] = typecode


def encode_batch(lines: list[bytes], first_index: int, first_line: int, file: str,
                 phase: int) -> BatchResult:
    """Tokenize a batch of consecutive lines of one file; document index = line index.

    Ids go from each Encoding's list straight into a typed `array` (C loops; an id that does
    not fit the dtype raises OverflowError). No numpy here: it would add ~0.2 s of import to
    every worker's start for nothing the stdlib cannot do."""
    tokenizer = _STATE["tokenizer"]
    boundaries = _STATE["boundaries"]
    typecode = _STATE["typecode"]
    eod_id = _STATE["eod_id"]
    append_eod = _STATE["append_eod"]
    min_tokens = _STATE["min_document_tokens"]

    texts: list[str] = []
    splits: list[int] = []
    records: list[dict[str, Any] | None] = []
    for offset, line in enumerate(lines):
        if not line.strip():
            continue
        record = parse_document(line, f"{file}:{first_line + offset}")
        split = split_of(first_index + offset, phase, boundaries)
        texts.append(record["text"])
        splits.append(split)
        # Only held-out documents are needed again (language for fertility).
        records.append(record if split else None)

    result = BatchResult(text_bytes=sum(len(t.encode("utf-8")) for t in texts))
    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    token_ids = [encoding.ids for encoding in encodings]
    del encodings

    result.ids = [array(typecode) for _ in SPLITS]
    result.lengths = [array("q") for _ in SPLITS]
    extra = 1 if append_eod else 0
    for ids, split in zip(token_ids, splits):
        if len(ids) < min_tokens:
            result.skipped += 1
            continue
        packed = result.ids[split]
        packed.fromlist(ids)
        if append_eod:
            packed.append(eod_id)
        result.lengths[split].append(len(ids) + extra)

    for k, record in enumerate(records):
        if record is None or len(token_ids[k]) < min_tokens:
            continue
        language = document_language(record) or guess_language(texts[k])
        counts = result.held_out.setdefault(language, [0, 0])
        counts[0] += len(token_ids[k])
        counts[1] += len(unicodedata.normalize("NFC", texts[k]))
    return result
