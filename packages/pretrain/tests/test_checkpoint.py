"""A run SIGKILLed mid-way resumes from its last complete checkpoint and reproduces the
uninterrupted run exactly (CPU, same seed); the checkpoint layout is the documented one."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pretrain_testing import TESTS_DIR, clean_env, losses, tiny_config, write_config

ITERS = 8


def _start(cfg_file, data, out, *extra):
    """Start one plain-python worker; output goes to a file, not a pipe: a SIGKILLed process's
    checkpoint-writer children may outlive it and would hold a pipe open."""
    log = Path(str(out) + f".{len(extra)}.log")
    with log.open("w") as handle:
        # Its own process group: the checkpoint writer's multiprocessing Manager (a spawned
        # server, ~280 MB) outlives a SIGKILLed parent, and is killed with the group below.
        proc = subprocess.Popen([sys.executable, str(TESTS_DIR / "_parallel_worker.py"),
                                 str(cfg_file), str(data), str(out), *extra], env=clean_env(),
                                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_file = log
    return proc


def _finish(proc):
    proc.wait(timeout=300)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what is left of the worker's group: orphans
    except ProcessLookupError:
        pass
    proc.log = proc.log_file.read_text()[-3000:]
    return proc


def test_sigkill_then_resume_reproduces_final_loss(data_artifact, tmp_path):
    cfg = write_config(tiny_config(schedule={"train_iters": ITERS}, checkpoint={"save_interval": 3},
                                   validation={"eval_interval": 4}),
                       tmp_path / "cfg.json")
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    # The uninterrupted run and the one killed while logging iteration 5 (checkpoint 3 complete,
    # 6 never started) are independent: run them side by side (one thread each).
    straight_run = _start(cfg, data_artifact, straight)
    killed = _finish(_start(cfg, data_artifact, crashed, "5"))
    straight_run = _finish(straight_run)
    assert straight_run.returncode == 0, straight_run.log
    assert killed.returncode == -9, killed.log
    latest = json.loads((crashed / "checkpoints" / "latest.json").read_text())
    assert latest == {"iteration": 3, "path": "iter_0000003"}
    assert not (crashed / "result_rank0.json").exists()

    resumed = _finish(_start(cfg, data_artifact, crashed))
    assert resumed.returncode == 0, resumed.log
    first = json.loads((straight / "result_rank0.json").read_text())
    second = json.loads((crashed / "result_rank0.json").read_text())
    assert second["resumed_from_iteration"] == 3
    assert second["final_loss"] == first["final_loss"]  # exactly, not approximately
    assert second["val_loss"] == first["val_loss"]
    assert losses(crashed) == losses(straight)  # rows past the checkpoint were replaced


def test_checkpoint_layout_and_model_only_load(data_artifact, tmp_path):
    from fullchain.pretrain import checkpoint, distributed
    from fullchain.pretrain.model import build_gpt_model
    from pretrain_testing import run_in_process

    cfg = tiny_config(schedule={"train_iters": 2}, checkpoint={"save_interval": 1})
    out = tmp_path / "out"
    metrics = run_in_process(cfg, data_artifact, out)
    root = out / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["iter_0000001", "iter_0000002", "latest.json"]
    assert checkpoint.latest_checkpoint(root)[0] == 2
    model_json = json.loads((out / "model.json").read_text())
    assert model_json["padded_vocab_size"] == metrics["padded_vocab_size"]
    assert (out / "loss.png").stat().st_size > 0

    # The model part loads alone (what the HF export does), without optimizer state.
    distributed.initialize(cfg.parallel, seed=99)
    try:
        model = build_gpt_model(cfg.model, cfg.parallel, metrics["padded_vocab_size"],
                                cfg.batch.seq_length)
        before = model.embedding.word_embeddings.weight.detach().clone()
        position = checkpoint.load(root / "iter_0000002", model)
        assert position == {"iteration": 2, "consumed_samples": 2 * cfg.batch.global_batch_size,
                            "loss": metrics["final_loss"], "val_loss": metrics["val_loss"],
                            "init_val_loss": metrics["init_val_loss"]}
        assert not model.embedding.word_embeddings.weight.detach().equal(before)
    finally:
        distributed.destroy()


def test_corrupt_latest_json_is_named(tmp_path):
    from fullchain.pretrain import checkpoint

    (tmp_path / "latest.json").write_text("{}")
    with pytest.raises(ValueError, match="latest.json"):
        checkpoint.latest_checkpoint(tmp_path)
