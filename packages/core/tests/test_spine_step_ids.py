"""Step-id invariants: exactly which changes alter a step's id (marin's assert_diff_version)."""
from pathlib import Path

import pytest
from fullchain.core import runner
from spine_testing import spec_for


def ids(*overrides: str) -> dict[str, str]:
    _, steps = runner.plan(spec_for(*overrides))
    return {s.name: s.step_id for s in steps}


def test_same_spec_same_ids(project):
    assert ids() == ids()


def test_downstream_field_changes_only_downstream(project):
    base, changed = ids(), ids("square.lr=0.5")
    assert changed["count"] == base["count"]
    assert changed["square"] != base["square"]


def test_upstream_field_changes_both(project):
    base, changed = ids(), ids("count.lowercase=false")
    assert changed["count"] != base["count"]
    assert changed["square"] != base["square"]  # through the input id


def test_fields_marked_not_affecting_output_do_not_change_ids(project):
    assert ids("count.workers=8", "square.sleep_s=3") == ids()


def test_experiment_equals_its_overrides(project):
    assert ids("experiment=small") == ids("square.lr=0.5")


def test_corpus_content_changes_ids_but_its_location_does_not(project, monkeypatch):
    base = ids()
    moved = project / "elsewhere" / "corpus.txt"
    moved.parent.mkdir()
    moved.write_text((project / "corpus.txt").read_text())
    monkeypatch.setenv("TOY_CORPUS", str(moved))
    assert ids() == base
    moved.write_text("different words entirely\n")
    assert ids()["count"] != base["count"]


def test_code_change_changes_id(project, tmp_path, monkeypatch):
    """Copy the toy package, edit one line of its source: the id changes."""
    import shutil
    import sys

    base = ids()
    pkgs = tmp_path / "pkgs"
    shutil.copytree(Path(__file__).parent / "toy_stages", pkgs / "toy_stages")
    monkeypatch.syspath_prepend(str(pkgs))
    for name in [m for m in sys.modules if m.startswith("toy_stages")]:
        monkeypatch.delitem(sys.modules, name)
    assert ids() == base  # same source, other location: same id
    source = pkgs / "toy_stages" / "square" / "__init__.py"
    source.write_text(source.read_text().replace("cfg.lr * sum", "cfg.lr * 2 * sum"))
    changed = ids()
    assert changed["count"] == base["count"] and changed["square"] != base["square"]


def test_plan_says_why_not_cached(project):
    runner.execute(spec_for())
    _, steps = runner.plan(spec_for("square.lr=0.3"))
    by = {s.name: s for s in steps}
    assert by["count"].status == "cached"
    assert by["square"].status == "to-run"
    assert "config.lr: 0.1 -> 0.3" in by["square"].reason


def test_missing_corpus_is_a_config_error_naming_the_field(project, monkeypatch):
    from fullchain.core.config import ConfigError

    monkeypatch.setenv("TOY_CORPUS", str(project / "nope.txt"))
    with pytest.raises(ConfigError, match=r"count\.corpus: .*nope\.txt.* does not exist"):
        runner.plan(spec_for())


def test_unset_content_path_hashes_as_itself_not_the_cwd(project):
    from fullchain.core.hashing import ContentHasher, _content_view

    assert _content_view("", ContentHasher(), "x.path") == ""
    assert _content_view(None, ContentHasher(), "x.path") is None
