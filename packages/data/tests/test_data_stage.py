"""The whole stage through `run()`: artifacts, card, metrics; determinism (byte-identical .bin);
bad input raised from inside a datatrove worker names file and line; an over-filtered corpus
names the filter that emptied it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_testing import CHINESE, prose, write_jsonl
from fullchain.data import DataConfig, SourceConfig, run
from fullchain.data.config import QualityConfig
from fullchain.data.stage import EmptyCorpusError
from fullchain.data.tokenize_config import PackConfig, TokenizerConfig


def small_config(tmp_path: Path, **overrides) -> DataConfig:
    english = [{"text": prose(seed)} for seed in range(12)] + [{"text": prose(0)}]  # one exact copy
    write_jsonl(tmp_path / "en.jsonl", english)
    (tmp_path / "zh.txt").write_text("\n\n".join(CHINESE * 3 + [CHINESE[0][::-1]]), encoding="utf-8")
    settings = dict(
        sources=[SourceConfig(name="en", path=str(tmp_path / "en.jsonl"), weight=2.0),
                 SourceConfig(name="zh", path=str(tmp_path / "zh.txt"), txt_unit="paragraph"),
                 SourceConfig(name="stdlib", format="stdlib", max_documents=4)],
        tokenizer=TokenizerConfig(vocab_size=400),
        pack=PackConfig(split="80,10,10"),
        quality=QualityConfig(min_chars=50),
    )
    settings.update(overrides)
    return DataConfig(**settings)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stage")
    out = tmp / "out"
    out.mkdir()
    cfg = small_config(tmp)
    return cfg, out, run(cfg, {}, out), tmp


def test_run_writes_the_artifact_card_and_metrics(first_run):
    cfg, out, metrics, _ = first_run
    for name in ("dataset.json", "data_card.json", "data_card.md", "length_histogram.png"):
        assert (out / name).is_file(), name
    assert (out / "tokenizer").is_dir() and (out / "packed").is_dir()
    assert not (out / "work" / "filtered").exists()  # bulky intermediates removed
    json.dumps(metrics)
    assert metrics["sources"]["en"]["documents_in"] == 13
    # one English copy + CHINESE repeated 3x (2 copies of each of 2 texts); the first stdlib
    # files (__phello__) hold identical copies of each other too
    assert metrics["exact_duplicates_removed"] >= 5
    assert metrics["sources"]["zh"]["documents_out"] == 3
    assert set(metrics["language_mix"]) <= {"en", "zh", "code"} and metrics["language_mix"]["code"] >= 1
    card = json.loads((out / "data_card.json").read_text())
    filters = [row["filter"] for row in card["sources"]["en"]["filters"]]
    assert filters == ["normalize", "language", "quality", "dedup"]
    assert card["sources"]["en"]["filters"][3]["dropped"] == {"exact": 1}
    assert card["sources"]["zh"]["filters"][3]["dropped"] == {"exact": 4}
    assert card["tokenizer"]["vocab_size"] == 400
    assert "## Deduplication" in (out / "data_card.md").read_text()


def test_same_spec_gives_byte_identical_bin(first_run):
    cfg, out, _, tmp = first_run
    again = tmp / "again"
    again.mkdir()
    run(cfg, {}, again)
    bins = sorted(p.relative_to(out) for p in (out / "packed").rglob("*.bin"))
    assert bins
    for relative in bins:
        assert (out / relative).read_bytes() == (again / relative).read_bytes(), relative


def test_bad_record_inside_a_worker_names_file_and_line(tmp_path):
    cfg = small_config(tmp_path)
    with open(tmp_path / "en.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"text": "unterminated\n')
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(Exception, match=r"en\.jsonl:14: malformed JSON"):
        run(cfg, {}, out)


def test_corpus_filtered_to_nothing_names_the_filter(tmp_path):
    cfg = small_config(tmp_path, quality=QualityConfig(min_chars=100_000, max_chars=200_000))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(EmptyCorpusError, match=r"source 'en': filter 'quality' removed the last 13 documents \(too_short: 13\)"):
        run(cfg, {}, out)
