"""Our Megatron indexed-dataset writer against megatron-core's own builder: identical bytes."""
from __future__ import annotations

import numpy as np
import pytest
from fullchain.data.indexed import IndexedWriter


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_writer_matches_megatron_builder_bytes(tmp_path, dtype):
    from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

    rng = np.random.default_rng(0)
    documents = [rng.integers(0, 30000, size=int(n), dtype=dtype) for n in rng.integers(0, 50, size=40)]
    documents[3] = np.zeros(0, dtype=dtype)  # an empty document too
    theirs = IndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=dtype)
    for document in documents:
        theirs.add_document(document, [document.size])
    theirs.finalize(str(tmp_path / "theirs.idx"))

    ours = IndexedWriter(tmp_path / "ours.bin", dtype)
    ours.add_document(documents[0])
    ours.add_documents(np.concatenate(documents[1:20]), [d.size for d in documents[1:20]])
    for document in documents[20:]:
        ours.add_document(document)
    ours.finalize(tmp_path / "ours.idx")

    for suffix in ("bin", "idx"):
        assert (tmp_path / f"ours.{suffix}").read_bytes() == (tmp_path / f"theirs.{suffix}").read_bytes()
    dataset = IndexedDataset(str(tmp_path / "ours"))
    assert len(dataset) == len(documents)
    assert all(np.array_equal(dataset[i], d) for i, d in enumerate(documents))


def test_writer_empty_and_bad_input(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    theirs = IndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=np.uint16)
    theirs.finalize(str(tmp_path / "theirs.idx"))
    ours = IndexedWriter(tmp_path / "ours.bin", np.uint16)
    ours.finalize(tmp_path / "ours.idx")
    assert (tmp_path / "ours.idx").read_bytes() == (tmp_path / "theirs.idx").read_bytes()

    with pytest.raises(ValueError, match="dtype"):
        IndexedWriter(tmp_path / "x.bin", np.uint32)
    writer = IndexedWriter(tmp_path / "y.bin", np.int32)
    with pytest.raises(ValueError, match="lengths add up to 3"):
        writer.add_documents(np.arange(4), [1, 2])
