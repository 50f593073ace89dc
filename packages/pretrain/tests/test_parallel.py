"""TP=2, PP=2 and DP=2 (torchrun, gloo, 2 ranks) give the TP=1 losses for the same seed; a TP=2
checkpoint resumed at TP=1 continues with the uninterrupted TP=1 losses."""

import json
import shutil

import pytest
from conftest import losses, run_in_process, tiny_config, torchrun, write_config

ITERS = 6
HALF = ITERS // 2


@pytest.fixture(scope="module")
def reference(data_artifact, tmp_path_factory):
    out = tmp_path_factory.mktemp("tp1")
    run_in_process(tiny_config(train_iters=ITERS), data_artifact, out)
    return losses(out)


@pytest.mark.parametrize("parallel", [
    {"tensor_parallel_size": 2},
    {"pipeline_parallel_size": 2},
    {"data_parallel_size": 2},
], ids=["tp2", "pp2", "dp2"])
def test_parallel_matches_single_process(parallel, reference, data_artifact, tmp_path):
    # save_interval=HALF: the TP=2 run's mid-run checkpoint feeds the reshard test below.
    cfg = tiny_config(train_iters=ITERS, save_interval=HALF, parallel=parallel)
    out = tmp_path / "out"
    torchrun(2, str(write_config(cfg, tmp_path / "cfg.json")), str(data_artifact), str(out))
    got = losses(out)
    assert len(got) == ITERS
    assert got == pytest.approx(reference, abs=1e-5, rel=0)
    assert reference[-1] < reference[0]
    assert json.loads((out / "result_rank0.json").read_text())["final_loss"] == pytest.approx(got[-1])
    if parallel == {"tensor_parallel_size": 2}:
        shutil.copytree(out / "checkpoints" / f"iter_{HALF:07d}",
                        _tp2_checkpoint_root(tmp_path.parent) / f"iter_{HALF:07d}")


def _tp2_checkpoint_root(base):
    return base / "tp2_half" / "checkpoints"


def test_tp2_checkpoint_resumes_at_tp1(reference, data_artifact, tmp_path):
    root = _tp2_checkpoint_root(tmp_path.parent)
    if not root.is_dir():
        pytest.skip("needs the tp2 run of test_parallel_matches_single_process (same session)")
    out = tmp_path / "out"
    shutil.copytree(root, out / "checkpoints")
    (out / "checkpoints" / "latest.json").write_text(json.dumps({"iteration": HALF, "path": f"iter_{HALF:07d}"}))
    metrics = run_in_process(tiny_config(train_iters=ITERS, save_interval=HALF), data_artifact, out)
    assert metrics["resumed_from_iteration"] == HALF
    assert losses(out) == pytest.approx(reference[HALF:], abs=1e-5, rel=0)
