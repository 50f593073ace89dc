"""Deduplication with datatrove: exact (content hash) and near-duplicate (4-stage MinHash LSH).

Both signatures are computed in ONE pass over the filtered documents (pipeline 1), so document
indices line up for both. datatrove's exact finder and MinHash buckets/cluster then run as usual.
The final pass (`DedupFilter`) reads both removal lists and drops each document once, with the
reason recorded:
- a document that MinHash removes is a near duplicate, labelled `exact` when its text also has an
  exact twin (identical text always has an identical signature, so MinHash's cluster already
  holds every exact copy and keeps exactly one of them);
- a document with no shingle at all (punctuation-only text) is removed by the exact finder alone.
Applying datatrove's ExactDedupFilter and MinhashDedupFilter one after the other instead would be
wrong: the first one's drops shift the document indices the second one relies on, and the two
finders may keep different members of a group, so both copies could disappear.

CJK text is shingled by characters: datatrove's default word tokenizer leaves an unspaced Chinese
line as one "word", so near copies go unseen (whitespace shingles found only 40 of 50 Chinese copies).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
from datatrove.pipeline.readers import JsonlReader
from fullchain.data.clean import CJK_CLASS, TallyingStep
from fullchain.data.fastfilters import simplify_text

# one token per CJK character, one per run of other letters/digits
TOKEN = re.compile(f"[{CJK_CLASS}]|[^\\W_{CJK_CLASS}]+")


def shingle_tokens(text: str) -> list[str]:
    """Lower-cased word tokens, CJK characters as single tokens (used for MinHash and decontam)."""
    return TOKEN.findall(text.lower())


def document_text(doc: Document) -> str:
    """What the exact finder hashes: the normalised text itself."""
    return doc.text


def exact_config() -> ExactDedupConfig:
    return ExactDedupConfig(content_getter=document_text)


class ExactSignatureStep(ExactDedupSignature):
    """datatrove's exact-dedup signature step, passing the documents on (so one pass feeds both)."""

    name = "💥 exact-deduplication signatures (pass-through)"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        signatures = []
        for doc_index, doc in enumerate(data):
            with self.stats.time_stats:
                self.stat_update("total")
                signatures.extend(self.get_hashes(doc, doc_index))
            yield doc
        self.save_hashes(rank, signatures)


class MinhashSignatureStep(MinhashDedupSignature):
    """datatrove's MinHash signature step with CJK-aware shingles.

    Documents shorter than one n-gram get one shingle of all their tokens, so every document with a
    token has a signature (needed by DedupFilter's reasoning above)."""

    def __init__(self, output_folder, config: MinhashConfig):
        super().__init__(output_folder=output_folder, config=config)

    def get_shingles(self, text: str) -> np.ndarray:
        import xxhash

        tokens = shingle_tokens(simplify_text(text, self.config.norm_config))
        n = self.config.n_grams
        if not tokens:
            return np.zeros((0, 1), dtype=np.uint64)
        grams = [" ".join(tokens[i: i + n]) for i in range(max(1, len(tokens) - n + 1))]
        # 64-bit, seedless and stable across processes (Python's hash() is salted per process)
        return np.fromiter((xxhash.xxh64_intdigest(g) for g in grams), dtype=np.uint64,
                           count=len(grams)).reshape((-1, 1))


class RankReader(JsonlReader):
    """Read back exactly the file this rank wrote in pipeline 1 (`<rank>.jsonl`), if any.

    datatrove's JsonlReader shards a file listing by rank, which would shift whenever one task
    wrote no file; reading by name keeps the document order the signatures were computed on."""

    name = "fullchain rank reader"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        filename = f"{rank:05d}.jsonl"
        if self.data_folder.isfile(filename):
            for doc in self.read_file(filename):
                self.update_doc_stats(doc)
                yield doc


def _read_uint32(path: Path) -> np.ndarray:
    return np.fromfile(path, dtype="<u4") if path.is_file() else np.zeros(0, dtype="<u4")


class DedupFilter(TallyingStep):
    """Drop duplicates found by the exact finder and by MinHash, counting the reason per source."""

    type = "🫂 - DEDUP"
    name = "fullchain dedup filter"

    def __init__(self, exact_folder: str | None, minhash_folder: str | None):
        super().__init__()
        self.exact_folder = exact_folder
        self.minhash_folder = minhash_folder

    def removal_sets(self, rank: int) -> tuple[set[int], set[int], set[int]]:
        exact: set[int] = set()  # removed by the exact finder
        members: set[int] = set()  # in a group of identical texts (removed or kept)
        if self.exact_folder:
            from datatrove.utils.typeshelper import ExtensionHelperSD

            suffix = ExtensionHelperSD.stage_2_duplicates
            for file in sorted(Path(self.exact_folder).glob(f"*/{rank:05d}{suffix}")):
                exact.update(int(i) for i in _read_uint32(file))
            # the copy the exact finder kept is a group member too: MinHash may drop it instead
            counts = ExtensionHelperSD.stage_2_counts
            for file in sorted(Path(self.exact_folder).glob(f"*/{rank:05d}{counts}")):
                members.update(int(i) for i in _read_uint32(file)[0::2])
        members |= exact
        near: set[int] = set()
        if self.minhash_folder:
            near.update(int(i) for i in _read_uint32(Path(self.minhash_folder) / f"{rank:06d}.remove"))
        return exact, near, members

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        exact, near, members = self.removal_sets(rank)

        def decide(index: int, doc: Document) -> str | None:
            if index in near:
                return "exact" if index in members else "near"
            if index in exact and (self.minhash_folder is None or not shingle_tokens(doc.text)):
                return "exact"
            return None

        yield from self.tally(data, decide)


__all__ = ["DedupFilter", "ExactSignatureStep", "MinhashSignatureStep", "RankReader", "exact_config",
           "shingle_tokens"]
