"""Writer of Megatron's indexed dataset format (`.bin` + `.idx`, header `MMIDIDX`), byte for byte
what `megatron.core.datasets.indexed_dataset.IndexedDatasetBuilder` writes for documents of one
sequence each (`add_document(ids, [len(ids)])`, then `finalize`).

Why not the builder itself: importing it imports torch and all of megatron.core (5-9 s on the
2-core machine, more than packing 10 MB takes), and it takes one Python call per document. The
files are read back with megatron-core's own `IndexedDataset` in the tests (and by pretraining),
and `tests/test_pack.py` compares both writers' bytes.

Layout of the `.idx` (little endian): b"MMIDIDX\\x00\\x00", u64 version 1, u8 dtype code,
u64 sequence count, u64 document count, i32 sequence lengths, i64 sequence byte offsets into the
`.bin`, i64 document indices (0, then the sequence count after each document).
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

INDEX_HEADER = b"MMIDIDX\x00\x00"
# megatron.core.datasets.indexed_dataset.DType
DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3, np.dtype(np.int32): 4,
               np.dtype(np.int64): 5, np.dtype(np.float64): 6, np.dtype(np.float32): 7,
               np.dtype(np.uint16): 8}


class IndexedWriter:
    """Append documents (token arrays) to `bin_path`; `finalize(idx_path)` writes the index."""

    def __init__(self, bin_path: str | Path, dtype) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in DTYPE_CODES:
            raise ValueError(f"dtype: {self.dtype} is not a Megatron indexed-dataset dtype")
        self._bin = open(bin_path, "wb")
        self._lengths: list[np.ndarray] = []

    def add_documents(self, ids: np.ndarray, lengths) -> None:
        """Documents given as their concatenated tokens and each one's length (in order)."""
        ids = np.asarray(ids, dtype=self.dtype)
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != ids.size:
            raise ValueError(f"lengths add up to {int(lengths.sum())} tokens, got {ids.size}")
        self._bin.write(ids.tobytes(order="C"))
        self._lengths.append(lengths)

    def add_document(self, ids: np.ndarray) -> None:
        """One document (one sequence)."""
        ids = np.asarray(ids, dtype=self.dtype)
        self.add_documents(ids, [ids.size])

    def finalize(self, idx_path: str | Path) -> None:
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, dtype=np.int64)
        count = lengths.size
        pointers = np.zeros(count, dtype=np.int64)
        if count:
            np.cumsum(lengths[:-1] * self.dtype.itemsize, out=pointers[1:])
        document_indices = np.arange(count + 1, dtype=np.int64)  # every document is one sequence
        with open(idx_path, "wb") as handle:
            handle.write(INDEX_HEADER)
            handle.write(struct.pack("<Q", 1))
            handle.write(struct.pack("<B", DTYPE_CODES[self.dtype]))
            handle.write(struct.pack("<Q", count))
            handle.write(struct.pack("<Q", document_indices.size))
            handle.write(lengths.astype(np.int32).tobytes(order="C"))
            handle.write(pointers.tobytes(order="C"))
            handle.write(document_indices.tobytes(order="C"))


__all__ = ["IndexedWriter", "INDEX_HEADER", "DTYPE_CODES"]
