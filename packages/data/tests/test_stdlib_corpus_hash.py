"""The demo corpus (a stdlib source) is hashed by the contents of the files it reads."""
from __future__ import annotations

import shutil
import sysconfig

import pytest
from fullchain.core.hashing import ContentHasher, digest, hash_view
from fullchain.data.config import DataConfig, SourceConfig
from fullchain.data.sources import SourceError, plan_sources
from fullchain.data.stdlib_corpus import content_entries, stdlib_root


def _view(max_documents: int) -> dict:
    cfg = DataConfig(sources=[SourceConfig(name="stdlib", format="stdlib", max_documents=max_documents)])
    return hash_view(cfg, ContentHasher(), "data")


def _copy_stdlib(destination, max_documents: int):
    for name, file in content_entries(max_documents):
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target)


def test_stdlib_source_hashes_the_files_it_reads():
    view = _view(5)["sources"][0]["path"]
    names = [name for name, _ in content_entries(5)]
    assert list(view["files"]) == names and len(names) == 5
    assert all(len(sha) == 64 for sha in view["files"].values())
    assert digest(_view(5)) == digest(_view(5))
    assert digest(_view(5)) != digest(_view(6))  # another file set: another id


def test_same_stdlib_content_elsewhere_same_id_other_content_other_id(tmp_path, monkeypatch):
    original = digest(_view(5))
    copy = tmp_path / "other-python" / "lib" / "python3"
    _copy_stdlib(copy, 5)
    real_get_paths = sysconfig.get_paths
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: {**real_get_paths(*a, **k), "stdlib": str(copy)})
    assert stdlib_root() == copy
    assert digest(_view(5)) == original  # same files, another location

    first = content_entries(5)[0][1]
    first.write_text(first.read_text() + "\n# another Python's version of this file\n")
    assert digest(_view(5)) != original  # same names, other content


@pytest.mark.parametrize("content, what", [("", "empty"), ("  \n\n\t \n", "whitespace-only")])
def test_blank_corpus_file_is_refused_before_any_worker_naming_no_filter(tmp_path, content, what):
    (tmp_path / "good.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "blank.jsonl").write_text(content)
    source = SourceConfig(name="x", path=str(tmp_path))
    with pytest.raises(SourceError) as caught:
        plan_sources([source], tasks=2, on_error="raise")
    message = str(caught.value)
    assert f"blank.jsonl: {what} file" in message and "filter" not in message
    units, skipped = plan_sources([source], tasks=2, on_error="skip")
    assert skipped == {"x": {"empty_file": 1}} and all("good.jsonl" in u["files"][0] for u in units)
