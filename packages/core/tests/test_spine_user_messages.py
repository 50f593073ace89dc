"""What a user reads: override mistakes, sweep config errors, `show`'s metrics and lineage."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fullchain.core import show
from fullchain.core import spec as spec_mod
from fullchain.core.config import ConfigError
from spine_testing import CONF, fullchain

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def linked_conf(tmp_path) -> Path:
    """A tree where train.model links to the model group, as pretrain.model does in conf/."""
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "tiny.yaml").write_text("hidden_size: 8\nlayers: 2\n")
    (conf / "model" / "big.yaml").write_text("hidden_size: 64\nlayers: 4\n")
    (conf / "config.yaml").write_text(
        "defaults: [{model: tiny}, _self_]\nstages: [train]\ngraph: {train: {inputs: []}}\n"
        "train: {model: '${model}', lr: 0.1}\npaths: {root: /tmp}\n")
    return conf


@pytest.mark.parametrize("prefix", ["", "+", "++"])
def test_override_into_an_interpolated_node_names_the_key_to_use(linked_conf, prefix):
    with pytest.raises(ConfigError) as caught:
        spec_mod.compose(linked_conf, [f"{prefix}train.model.hidden_size=66"])
    message = str(caught.value)
    assert "train.model: ${model}" in message and "Override `model.hidden_size=66` instead" in message
    assert "To append" not in message and "++" not in message.split("instead")[1]


def test_the_suggested_override_works_and_keeps_the_preset(linked_conf):
    cfg = spec_mod.to_spec(spec_mod.compose(linked_conf, ["model=big", "model.hidden_size=66"]))
    assert cfg["train"]["model"] == {"hidden_size": 66, "layers": 4}
    assert spec_mod.to_spec(spec_mod.compose(linked_conf, ["++train.lr=0.5"]))["train"]["lr"] == 0.5


def test_repo_tree_pretrain_model_override_points_at_model():
    with pytest.raises(ConfigError, match=r"Override `model\.hidden_size=128` instead"):
        spec_mod.compose(REPO / "conf", ["experiment=tiny", "++pretrain.model.hidden_size=128"])


@pytest.mark.parametrize("override", ["square.lrr=0.2,0.3", "square.lr=fast,0.3"])
def test_sweep_config_error_exits_2_with_the_plain_run_message(project, override):
    plain = fullchain("run", "--conf", str(CONF), override.split(",")[0], check=False)
    sweep = fullchain("run", "--conf", str(CONF), override, "-m", check=False)
    assert plain.returncode == sweep.returncode == 2, sweep.stderr
    message = plain.stderr[plain.stderr.index("fullchain: error: "):].strip()
    assert message in sweep.stderr
    assert f"sweep job [{override.split(',')[0]}]" in sweep.stderr
    assert "HYDRA_FULL_ERROR" not in sweep.stderr and not (project / "artifacts").exists()


def test_show_prints_metrics_as_aligned_rows():
    rows = show.metric_rows({"loss": 1.5, "sources": {"a": {"docs": 3, "tokens": 12}},
                             "ids": list(range(100))})
    keys = [row.split()[0] for row in rows]
    assert keys == ["ids", "loss", "sources.a.docs", "sources.a.tokens"]
    assert len({row.index(row.split()[1], 2 + len(row.split()[0])) for row in rows}) == 1  # one column
    assert all(len(row) <= 2 + len("sources.a.tokens") + 2 + 100 for row in rows)


def test_show_in_a_copied_store_stays_in_that_store(project, tmp_path):
    fullchain("run", "--conf", str(CONF))
    copy = tmp_path / "elsewhere" / "store"
    shutil.copytree(project / "artifacts", copy)
    shutil.move(project / "artifacts", tmp_path / "original-moved-away")
    (square_dir,) = [p for p in (copy / "square").iterdir() if p.is_dir()]
    out = fullchain("show", str(square_dir)).stdout
    (count_dir,) = [p for p in (copy / "count").iterdir() if p.is_dir()]
    assert f"count {count_dir.name}  {count_dir}" in out
    assert "INCOMPLETE" not in out and str(project / "artifacts") not in out.split("lineage")[1]
    assert "  value  " in out  # metrics as rows

    shutil.rmtree(count_dir)
    out = fullchain("show", str(square_dir)).stdout
    assert f"count {count_dir.name}  NOT IN THIS STORE ({copy})" in out


def test_show_lists_the_files_of_a_file_list_source(tmp_path):
    files = {f"pkg/mod{i:02d}.py": f"{i:064x}" for i in range(14)}
    step = tmp_path / "store" / "data" / "abcd1234abcd1234"
    step.mkdir(parents=True)
    (step / "manifest.json").write_text(json.dumps({
        "stage": "data", "step_id": step.name, "inputs": {}, "metrics": {},
        "config": {"sources": [{"name": "stdlib", "path": "", "format": "stdlib"}]},
        "hash_payload": {"config": {"sources": [{"name": "stdlib", "path": {"sha256": "f" * 64, "files": files}}]}},
    }))
    out = show.render(step)
    assert "<- sources[0].path: 14 files (sha256 ffffffffffffffff)" in out
    assert "pkg/mod00.py  sha256 0000000000000000" in out and "... 4 more" in out
    assert "pkg/mod13.py" in show.render(step, full=True).split("{")[0]


def test_env_sync_shows_the_installers_output_on_failure(project):
    """The one-line success output is checked with the real env build in
    test_spine_envs_launchers (one venv build for both)."""
    if shutil.which("uv") is None:
        pytest.skip("uv not installed")
    venv = project / ".venvs" / "mini"
    overrides = [f"env.envs.current.python={venv}/bin/python",
                 f"+env.envs.current.packages=[{project / 'no-such-package'}]"]
    args = [a for o in overrides for a in ("--override", o)]
    failed = fullchain("env", "sync", "--conf", str(CONF), *args, check=False, timeout=600)
    assert failed.returncode == 2 and "building environment 'current' failed" in failed.stderr
    assert "its output ends:" in failed.stderr and "no-such-package" in failed.stderr.split("its output ends:")[1]


def test_a_field_the_yaml_leaves_at_its_default_is_overridden_without_plus(project, tmp_path):
    """Group YAMLs state only deltas from the dataclass, so Hydra alone would demand
    `+square.sleep_s=...` for a real field; a typo still gets Hydra's refusal."""
    conf = tmp_path / "conf-deltas"
    shutil.copytree(CONF, conf)
    (conf / "square" / "default.yaml").write_text("lr: 0.1\n")
    plain = fullchain("run", "--conf", str(conf), "square.sleep_s=0.1", "square.fail=false")
    assert "2 step(s) ran" in plain.stderr
    sweep = fullchain("run", "--conf", str(conf), "-m", "square.sleep_s=0.1,0.2")
    assert sweep.stderr.count("every step was reused") == 2  # sleep_s is not hashed
    typo = fullchain("run", "--conf", str(conf), "square.sleep=0.1", check=False)
    assert typo.returncode == 2 and "Could not override 'square.sleep'" in typo.stderr
