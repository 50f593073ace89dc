"""TP=2, PP=2 and DP=2 (torchrun, gloo, 2 ranks) give the TP=1 losses for the same seed; a TP=2
checkpoint resumed at TP=1 continues with the uninterrupted TP=1 losses. The 2-rank runs are
the shared `parallel_runs` launch (conftest)."""

import json
import shutil

import pytest
from pretrain_testing import (
    PARALLEL_HALF,
    PARALLEL_ITERS,
    PARALLEL_LAYOUTS,
    losses,
    run_in_process,
    tiny_config,
)


@pytest.fixture(scope="module")
def reference(data_artifact, tmp_path_factory):
    out = tmp_path_factory.mktemp("tp1")
    run_in_process(tiny_config(schedule={"train_iters": PARALLEL_ITERS}), data_artifact, out)
    return losses(out)


@pytest.mark.parametrize("layout", sorted(PARALLEL_LAYOUTS))
def test_parallel_matches_single_process(layout, reference, parallel_runs):
    out = parallel_runs / layout
    got = losses(out)
    assert len(got) == PARALLEL_ITERS
    assert got == pytest.approx(reference, abs=1e-5, rel=0)
    assert reference[-1] < reference[0]
    for rank in (0, 1):  # every rank returns the same metrics
        result = json.loads((out / f"result_rank{rank}.json").read_text())
        assert result["final_loss"] == pytest.approx(got[-1])
        assert result["world_size"] == 2
    assert result["data_parallel_size"] == (2 if layout == "dp2" else 1)
    if layout == "dp2":
        # The export subprocess from rank 0 of a torchrun world forms its own one-process world
        # (torchrun's TORCHELASTIC_USE_AGENT_STORE once made it wait 30 min for a store).
        assert json.loads((out / "result_rank0.json").read_text())["hf_dir"] == "hf"
        assert (out / "hf" / "model.safetensors").is_file()


def test_tp2_checkpoint_resumes_at_tp1(reference, parallel_runs, data_artifact, tmp_path):
    from megatron.core import dist_checkpointing

    half = f"iter_{PARALLEL_HALF:07d}"
    saved = parallel_runs / "tp2" / "checkpoints" / half
    assert dist_checkpointing.load_common_state_dict(str(saved))["parallel"] == {
        "tensor_parallel_size": 2, "pipeline_parallel_size": 1, "data_parallel_size": 1}
    out = tmp_path / "out"
    shutil.copytree(saved, out / "checkpoints" / half)
    (out / "checkpoints" / "latest.json").write_text(
        json.dumps({"iteration": PARALLEL_HALF, "path": half}))
    metrics = run_in_process(tiny_config(schedule={"train_iters": PARALLEL_ITERS},
                                         checkpoint={"save_interval": PARALLEL_HALF}),
                             data_artifact, out)
    assert metrics["resumed_from_iteration"] == PARALLEL_HALF
    assert losses(out) == pytest.approx(reference[PARALLEL_HALF:], abs=1e-5, rel=0)
