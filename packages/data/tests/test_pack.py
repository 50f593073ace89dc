"""Tokenize + pack: read back through megatron-core, determinism, splits/blends, bad input."""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
from fullchain.data.tokenize_config import PackConfig, TokenizerConfig

WORDS = ("the river carries sand from high mountains to a quiet sea while farmers plant rice "
         "and children read old books about stars storms ships bread lighthouses").split()
HAN = "春天来了山坡上的桃花开得正好孩子们放学以后常常跑到河边去放风筝老人坐在树下喝茶聊天城墙用青砖砌成"
TOKENIZER = TokenizerConfig(vocab_size=700, min_frequency=2)
PACK = PackConfig(split="80,10,10", encode_batch_size=37)  # odd batch size: batches cut files


def english_docs(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"Document {seed}-{i}. " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 80)))
            for i in range(count)]


def chinese_docs(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"第{i}篇：" + "".join(rng.choice(HAN) for _ in range(rng.randint(5, 120))) + "。"
            for i in range(count)]


def write_datatrove(directory: Path, texts: list[str], language: str | None,
                    per_file: int) -> list[Path]:
    """Cleaned-data files exactly as the data stage's datatrove JsonlWriter writes them."""
    from datatrove.data import Document
    from datatrove.pipeline.writers import JsonlWriter

    for rank, first in enumerate(range(0, len(texts), per_file)):
        with JsonlWriter(str(directory)) as writer:
            for index, text in enumerate(texts[first:first + per_file], start=first):
                metadata = {"language": language} if language else {"url": f"x/{index}"}
                writer.write(Document(text=text, id=f"{directory.name}/{index}",
                                      metadata=metadata), rank=rank)
    return sorted(directory.glob("*.jsonl.gz"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("cleaned")
    english = english_docs(240, seed=1)
    # A corpus string that looks like the EOD marker must stay plain text.
    english[5] = "Fake end <|endoftext|> inside a document, and <|im_start|> too."
    chinese = chinese_docs(150, seed=2)
    # No language metadata here: fertility falls back to language identification.
    unlabelled = english_docs(60, seed=3)
    return {
        "web": (english, write_datatrove(root / "web", english, "en", per_file=100)),
        "zh": (chinese, write_datatrove(root / "zh", chinese, "zh", per_file=1000)),
        "misc": (unlabelled, write_datatrove(root / "misc", unlabelled, None, per_file=1000)),
    }


def sources(corpus) -> list[tuple[str, float, list[Path]]]:
    return [("web", 3.0, corpus["web"][1]), ("zh", 1.0, corpus["zh"][1]),
            ("misc", 0.5, corpus["misc"][1])]


@pytest.fixture(scope="module")
def packed(corpus, tmp_path_factory):
    from fullchain.data.pack import finalize

    out = tmp_path_factory.mktemp("artifact")
    (out / "packed").mkdir()
    (out / "packed" / "leftover.bin").write_bytes(b"from an interrupted attempt")
    metrics = finalize(TOKENIZER, PACK, sources(corpus), out, num_workers=2, seed=7)
    return out, metrics


def packed_documents(prefix: Path) -> list[np.ndarray]:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(str(prefix))
    # Copies: the items are views into a memory map closed when `dataset` goes away.
    return [np.array(dataset[i]) for i in range(len(dataset))]


def test_dataset_json_schema_and_blend(packed):
    out, metrics = packed
    spec = json.loads((out / "dataset.json").read_text())
    assert set(spec) == {"format", "version", "tokenizer", "vocab_size", "eod_id", "pad_id", "bos_id",
                         "dtype", "splits"}
    from fullchain.core.contracts import read_packed_corpus

    assert read_packed_corpus(out).splits["train"].num_tokens == spec["splits"]["train"]["num_tokens"]
    assert spec["format"] == "megatron-indexed" and spec["tokenizer"] == "tokenizer"
    assert (spec["vocab_size"], spec["eod_id"], spec["pad_id"], spec["bos_id"]) == (700, 0, 1, None)
    assert spec["dtype"] == "uint16"
    assert set(spec["splits"]) == {"train", "valid", "test"}
    train = spec["splits"]["train"]
    assert train["prefixes"] == ["packed/web/train", "packed/zh/train", "packed/misc/train"]
    assert train["weights"] == pytest.approx([3 / 4.5, 1 / 4.5, 0.5 / 4.5])
    for split, entry in spec["splits"].items():
        assert sum(entry["weights"]) == pytest.approx(1.0)
        for prefix, tokens, documents in zip(entry["prefixes"], entry["num_tokens"],
                                             entry["num_documents"]):
            name = prefix.split("/")[1]
            assert metrics["tokens"][name][split] == tokens
            assert metrics["documents"][name][split] == documents
            assert (out / f"{prefix}.bin").stat().st_size == 2 * tokens
            assert len(packed_documents(out / prefix)) == documents
    assert not (out / "packed" / "leftover.bin").exists()
    # Every document lands in exactly one split, about 80/10/10.
    for name, total in (("web", 240), ("zh", 150), ("misc", 60)):
        counts = metrics["documents"][name]
        assert sum(counts.values()) == total
        assert abs(counts["train"] - 0.8 * total) <= 3
        assert abs(counts["valid"] - 0.1 * total) <= 3
    json.dumps(metrics)
    assert 0 < metrics["fertility_en"] < metrics["fertility_zh"]
    assert metrics["pack_megabytes_per_second"] > 0


def test_read_back_equals_tokenized_text(packed, corpus):
    from fullchain.data.tokenizer import load_backend

    out, _ = packed
    backend = load_backend(out / "tokenizer" / "tokenizer.json")
    for name in ("web", "zh", "misc"):
        texts = corpus[name][0]
        position = {text: index for index, text in enumerate(texts)}
        seen: list[int] = []
        for split in ("train", "valid", "test"):
            indices = []
            for ids in packed_documents(out / "packed" / name / split):
                assert ids[-1] == 0 and 0 not in ids[:-1].tolist()
                text = backend.decode(ids[:-1].tolist(), skip_special_tokens=False)
                indices.append(position[text])
                assert ids[:-1].tolist() == backend.encode(text, add_special_tokens=False).ids
            assert indices == sorted(indices), "documents keep their source order within a split"
            seen += indices
        assert sorted(seen) == list(range(len(texts)))


def test_gpt_dataset_samples_are_the_packed_stream(packed):
    """megatron-core's GPTDataset over our prefix yields windows of the documents + EOD."""
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.utils import Split

    class Tokenizer:  # the fields GPTDataset reads from a Megatron tokenizer
        vocab_size = 700
        eod = 0
        pad = 1
        unique_identifiers = {"class": "test"}

    out, _ = packed
    prefix = str(out / "packed" / "web" / "train")
    indexed = IndexedDataset(prefix)
    config = GPTDatasetConfig(random_seed=1234, sequence_length=16, tokenizer=Tokenizer(),
                              reset_position_ids=False, reset_attention_mask=False,
                              eod_mask_loss=False, path_to_cache=str(out / "cache"))
    dataset = GPTDataset(indexed, prefix, np.arange(len(indexed), dtype=np.int32), None,
                         Split.train, config)
    stream = np.concatenate([np.array(indexed[int(d)]) for d in dataset.document_index])
    assert len(dataset) == (len(stream) - 1) // 16
    for index in range(len(dataset)):
        sample = dataset[index]
        start = int(dataset.shuffle_index[index]) * 16
        window = stream[start:start + 17].astype(np.int64)
        assert sample["tokens"].tolist() == window[:-1].tolist()
        assert sample["labels"].tolist() == window[1:].tolist()


def test_same_input_gives_identical_bytes_with_any_worker_count_or_batch_size(packed, corpus, tmp_path):
    from fullchain.data.pack import finalize

    first, _ = packed
    second = tmp_path / "again"
    second.mkdir()
    # Batch sizes are not hashed into the step id, so they must not change a byte either.
    rebatched = PackConfig(split=PACK.split, encode_batch_size=5, encode_batch_bytes=300)
    finalize(TOKENIZER, rebatched, sources(corpus), second, num_workers=0, seed=7)
    files = sorted(p.relative_to(first) for p in first.rglob("*")
                   if p.is_file() and "cache" not in p.parts)
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative


def test_training_text_is_shared_by_weight(corpus):
    from fullchain.data import pack_worker
    from fullchain.data.pack import _phase, training_texts

    boundaries = pack_worker.split_boundaries((1.0, 0.0, 0.0))
    chosen = sources(corpus)[:2]
    phases = {name: _phase(0, name) for name, _, _ in chosen}
    counter = [0]
    texts = list(training_texts(chosen, boundaries, phases, 4000, counter))
    web = sum(len(t.encode()) for t in texts if t.startswith("Document") or t.startswith("Fake"))
    zh = counter[0] - web
    assert 4000 <= counter[0] < 4000 + 2 * 600
    assert 2.0 < web / zh < 4.5  # weights 3:1, give or take a whole document
    # A cap above the corpus takes everything, small sources first exhausted.
    everything = list(training_texts(chosen, boundaries, phases, 10**9, [0]))
    assert len(everything) == 240 + 150


def test_small_source_leaves_empty_splits_out(corpus, tmp_path):
    from fullchain.data.pack import finalize

    tiny = write_datatrove(tmp_path / "tiny", ["only one document here"], "en", per_file=10)
    metrics = finalize(TOKENIZER, PACK, [("web", 1.0, corpus["web"][1]), ("tiny", 1.0, tiny)],
                       tmp_path / "out", num_workers=0, seed=7)
    spec = json.loads((tmp_path / "out" / "dataset.json").read_text())
    present = [s for s in ("train", "valid", "test") if metrics["documents"]["tiny"][s]]
    assert len(present) == 1
    for split, entry in spec["splits"].items():
        assert ("packed/tiny/" + split in entry["prefixes"]) == (split in present)
        assert (tmp_path / "out" / "packed" / "tiny" / f"{split}.bin").exists() == (split in present)
        assert sum(entry["weights"]) == pytest.approx(1.0)


def test_bad_line_names_file_and_line(tmp_path, packed):
    from fullchain.data.pack import finalize

    out, _ = packed
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(bad, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"text": "fine", "id": "0", "metadata": {}}) + "\n")
        handle.write('{"text": "broken\n')
    pretrained = TokenizerConfig(path=str(out / "tokenizer"))
    with pytest.raises(ValueError, match=r"bad\.jsonl\.gz:2: not a JSON document"):
        finalize(pretrained, PackConfig(split="1,0,1"), [("bad", 1.0, [bad])], tmp_path / "o",
                 num_workers=1, seed=0)
    no_text = tmp_path / "no_text.jsonl.gz"
    with gzip.open(no_text, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"content": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"no_text\.jsonl\.gz:1: .*\"text\""):
        finalize(pretrained, PackConfig(), [("t", 1.0, [no_text])], tmp_path / "p",
                 num_workers=0, seed=0)
    with pytest.raises(ValueError, match=r"^tokenizer.path: .* inside this step's output"):
        finalize(pretrained, PackConfig(), [("t", 1.0, [bad])], out, 0, 0)
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    with pytest.raises(ValueError, match=r"^sources\[0\]: name"):
        finalize(pretrained, PackConfig(), [("../up", 1.0, [no_text])], tmp_path / "q", 0, 0)


def test_int32_and_short_documents_skipped(tmp_path, packed):
    from fullchain.data.pack import finalize, resolve_dtype
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    assert resolve_dtype("auto", 65499) == "uint16" and resolve_dtype("auto", 65500) == "int32"
    with pytest.raises(ValueError, match=r"^pack.dtype:"):
        resolve_dtype("uint16", 100_000)
    out, _ = packed
    texts = ["", "one two three", "x", "   ", "four five six seven"]
    files = write_datatrove(tmp_path / "short", texts, "en", per_file=10)
    metrics = finalize(TokenizerConfig(path=str(out / "tokenizer")),
                       PackConfig(split="1,0,0", dtype="int32", min_document_tokens=2),
                       [("short", 1.0, files)], tmp_path / "o", num_workers=0, seed=0)
    # "" has 0 tokens; "x" has 1; "   " is 1-3 tokens of spaces, kept only if >= 2.
    kept = metrics["documents"]["short"]["train"]
    assert metrics["skipped_documents"]["short"] == len(texts) - kept >= 2
    dataset = IndexedDataset(str(tmp_path / "o" / "packed" / "short" / "train"))
    assert dataset.index.dtype == np.int32 and len(dataset) == kept
    assert (tmp_path / "o" / "packed" / "short" / "train.bin").stat().st_size == \
        4 * metrics["tokens"]["short"]["train"]
