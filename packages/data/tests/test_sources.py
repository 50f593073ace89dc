"""Sources: every format reads, and every kind of bad input fails naming file and line (or is
counted under on_error=skip)."""
from __future__ import annotations

import gzip

import pytest
from data_testing import ENGLISH, write_jsonl
from fullchain.data.config import SourceConfig
from fullchain.data.sources import SourceError, SourceReader, plan_sources, read_all, stdlib_files


def docs_of(sources, on_error="raise"):
    units, skipped = plan_sources(sources, tasks=1, on_error=on_error)
    return list(read_all(units, on_error)), skipped


def test_txt_modes(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("p1 l1\np1 l2\n\np2\n\n\np3\np3b\n", encoding="utf-8")
    whole, _ = docs_of([SourceConfig(name="s", path=str(path))])
    assert len(whole) == 1 and whole[0].text.startswith("p1 l1")
    paragraphs, _ = docs_of([SourceConfig(name="s", path=str(path), txt_unit="paragraph")])
    assert [d.text for d in paragraphs] == ["p1 l1\np1 l2", "p2", "p3\np3b"]
    assert paragraphs[2].id == "s/a.txt:7"
    grouped, _ = docs_of([SourceConfig(name="s", path=str(path), txt_unit="paragraph", units_per_document=2)])
    assert [d.text for d in grouped] == ["p1 l1\np1 l2\n\np2", "p3\np3b"]
    lines, _ = docs_of([SourceConfig(name="s", path=str(path), txt_unit="line", max_documents=3)])
    assert [d.text for d in lines] == ["p1 l1", "p1 l2", "p2"]


def test_jsonl_gz_glob_directory_parquet_and_hf_disk(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    folder = tmp_path / "corpus"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [{"body": ENGLISH[0], "key": 7}])
    with gzip.open(folder / "b.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write('{"body": "second"}\n')
    by_dir, _ = docs_of([SourceConfig(name="d", path=str(folder), text_field="body")])
    assert [d.text for d in by_dir] == [ENGLISH[0], "second"]
    by_glob, _ = docs_of([SourceConfig(name="g", path=str(folder / "*.jsonl"), text_field="body", id_field="key")])
    assert by_glob[0].id == "g/7"
    pq.write_table(pa.table({"text": ["x1", "x2", "x3"]}), tmp_path / "t.parquet")
    parquet, _ = docs_of([SourceConfig(name="p", path=str(tmp_path / "t.parquet"))])
    assert [d.text for d in parquet] == ["x1", "x2", "x3"]
    Dataset.from_dict({"text": [f"row {i}" for i in range(5)]}).save_to_disk(str(tmp_path / "hf"))
    hf, _ = docs_of([SourceConfig(name="h", path=str(tmp_path / "hf"), format="hf_disk")])
    assert [d.text for d in hf] == [f"row {i}" for i in range(5)]  # 2 shards, in order
    assert {d.metadata["source"] for d in hf} == {"h"}


def test_stdlib_is_sorted_and_capped():
    files = stdlib_files()
    assert files == sorted(files, key=lambda p: p.as_posix()) or len(files) > 50
    docs, _ = docs_of([SourceConfig(name="stdlib", format="stdlib", max_documents=5)])
    assert len(docs) == 5 and all(d.id.startswith("stdlib/") for d in docs)


@pytest.mark.parametrize("content, reason, needle", [
    (b'{"text": "ok"}\n{"text": broken}\n', "malformed_json", "malformed JSON"),
    (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "invalid_utf8", "invalid UTF-8"),
    (b'{"text": "ok"}\n{"body": "no text"}\n', "missing_field", "missing field 'text'"),
])
def test_bad_records_name_file_and_line_or_are_counted(tmp_path, content, reason, needle):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    source = SourceConfig(name="bad", path=str(path))
    with pytest.raises(SourceError, match=rf"bad\.jsonl:2: {needle}"):
        docs_of([source])
    units, _ = plan_sources([source], 1, "skip")
    reader = SourceReader(units, on_error="skip")
    docs = list(reader.run(None, 0, 1))
    assert [d.text for d in docs] == ["ok"]
    assert reader.stats.stats[f"skipped/bad/{reason}"].total == 1


def test_missing_path_and_empty_file(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        plan_sources([SourceConfig(name="x", path=str(tmp_path / "nope.jsonl"))], 1, "raise")
    with pytest.raises(SourceError, match="matches no files"):
        plan_sources([SourceConfig(name="x", path=str(tmp_path / "*.jsonl"))], 1, "raise")
    (tmp_path / "empty.jsonl").write_text("")
    write_jsonl(tmp_path / "full.jsonl", [{"text": "hello"}])
    with pytest.raises(SourceError, match="empty.jsonl: empty file"):
        plan_sources([SourceConfig(name="x", path=str(tmp_path / "*.jsonl"))], 1, "raise")
    units, skipped = plan_sources([SourceConfig(name="x", path=str(tmp_path / "*.jsonl"))], 1, "skip")
    assert skipped == {"x": {"empty_file": 1}} and len(units) == 1


def test_config_validation():
    with pytest.raises(ValueError, match="^weight"):
        SourceConfig(name="a", path="x.txt", weight=0)
    with pytest.raises(ValueError, match="^path"):
        SourceConfig(name="a")
    with pytest.raises(ValueError, match="^name"):
        SourceConfig(name="a/b", path="x.txt")
    assert SourceConfig(name="a", path="x.jsonl.gz").format == "jsonl"


def test_one_file_is_split_across_tasks_without_loss_or_overlap(tmp_path):
    write_jsonl(tmp_path / "one.jsonl", [{"text": f"doc {i}"} for i in range(10)] + [{"no": 1}])
    (tmp_path / "one.txt").write_text("\n\n".join(f"para {i}" for i in range(7)), encoding="utf-8")
    for source in (SourceConfig(name="j", path=str(tmp_path / "one.jsonl")),
                   SourceConfig(name="t", path=str(tmp_path / "one.txt"), txt_unit="paragraph")):
        units, _ = plan_sources([source], tasks=3, on_error="skip")
        assert len(units) == 3
        texts, skipped = [], 0
        for rank in range(3):
            reader = SourceReader(units, on_error="skip")
            texts += [d.text for d in reader.run(None, rank, 3)]
            skipped += reader.stats.stats["skipped/j/missing_field"].total
        expected = [f"doc {i}" for i in range(10)] if source.name == "j" else [f"para {i}" for i in range(7)]
        assert sorted(texts) == sorted(expected)
        assert skipped == (1 if source.name == "j" else 0)
