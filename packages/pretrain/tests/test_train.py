"""Single-process training on the tiny corpus: the loss falls, metrics and artifacts are written,
and bad input fails before the first step with a message naming the field or file."""

import json

import pytest
from pretrain_testing import losses, run_in_process, tiny_config


def test_loss_falls_and_metrics_are_written(data_artifact, tmp_path):
    cfg = tiny_config(schedule={"train_iters": 40, "warmup_iters": 4},
                      validation={"eval_interval": 20, "eval_iters": 2},
                      logging={"tensorboard": True}, checkpoint={"save_interval": 40})
    out = tmp_path / "out"
    metrics = run_in_process(cfg, data_artifact, out)
    curve = losses(out)
    assert len(curve) == 40
    assert sum(curve[-5:]) / 5 < curve[0] - 1.0, curve  # ln(384) ~ 5.95 at init
    assert metrics["val_loss"] < curve[0] - 1.0
    assert metrics["val_perplexity"] == pytest.approx(2.718281828 ** metrics["val_loss"], rel=1e-6)
    assert metrics["tokens_per_second"] > 0 and 0 < metrics["mfu"] < 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # validation of the untrained initialisation first (iteration 0), then every 20 steps
    assert [r["iteration"] for r in rows if "val_loss" in r] == [0, 20, 40]
    assert rows[0]["val_loss"] == metrics["init_val_loss"]
    assert metrics["init_val_perplexity"] == pytest.approx(2.718281828 ** metrics["init_val_loss"], rel=1e-6)
    assert metrics["val_perplexity"] < 0.5 * metrics["init_val_perplexity"]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    json.dumps(metrics)  # JSON-serialisable for the manifest


def test_vocab_smaller_than_tokenizer(data_artifact, tmp_path):
    with pytest.raises(ValueError, match=r"^vocab_size: .*smaller than the tokenizer's 384"):
        run_in_process(tiny_config(model={"vocab_size": 100}), data_artifact, tmp_path / "out")
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_dataset_too_short_for_one_batch(data_artifact, tmp_path):
    cfg = tiny_config(batch={"seq_length": 64, "micro_batch_size": 64, "global_batch_size": 4096},
                      model={"max_position_embeddings": 64})
    with pytest.raises(ValueError, match="splits.train holds .* fewer than one global batch"):
        run_in_process(cfg, data_artifact, tmp_path / "out")


def test_tensor_parallel_larger_than_world(data_artifact, tmp_path):
    with pytest.raises(ValueError, match="^tensor_parallel_size: .*does not divide the world size 1"):
        run_in_process(tiny_config(parallel={"tensor_parallel_size": 2}), data_artifact, tmp_path / "out")


@pytest.mark.parametrize("overrides, message", [
    ({"model": {"hidden_size": 66}},
     r"^pretrain\.model\.hidden_size: 66 is not divisible by num_attention_heads=4"),
    ({"model": {"num_attention_heads": 8, "num_query_groups": 2, "hidden_size": 64},
      "parallel": {"tensor_parallel_size": 4}},
     r"^pretrain\.model\.num_query_groups: 2 is not divisible by tensor_parallel_size=4"),
    ({"batch": {"global_batch_size": 6, "micro_batch_size": 4}},
     r"^pretrain\.batch\.global_batch_size: 6 is not divisible by micro_batch_size=4"),
    ({"batch": {"seq_length": 128}},
     r"^pretrain\.batch\.seq_length: 128 exceeds model.max_position_embeddings=64"),
    ({"parallel": {"pipeline_parallel_size": 3}},
     r"^pretrain\.parallel\.pipeline_parallel_size: 3 does not divide"),
    ({"schedule": {"warmup_iters": 6}}, r"^pretrain\.schedule\.warmup_iters: 6 must be smaller"),
    ({"schedule": {"min_lr": 1.0}}, r"^pretrain\.schedule\.min_lr: 1.0 must be within"),
    ({"schedule": {"epochs": 1.0}}, r"^pretrain\.schedule\.epochs: pretraining counts steps"),
    ({"optimizer": {"lr": "fast"}}, r"^pretrain\.optimizer\.lr: expected a number, got 'fast'"),
    ({"logging": {"log_interval": 0}}, r"^pretrain\.logging\.log_interval: 0 must be a positive"),
], ids=["hidden-heads", "groups-tp", "batch", "seq", "pp-layers", "warmup", "min-lr", "epochs",
        "lr-type", "log-interval"])
def test_config_errors_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_missing_dataset_json_is_named(tmp_path):
    from fullchain.core.contracts import ContractError, read_packed_corpus

    with pytest.raises(ContractError, match="dataset.json: missing"):
        read_packed_corpus(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "megatron-indexed", "dtype": "uint16",
                                                       "splits": {"train": {"prefixes": ["nope"]}}}))
    with pytest.raises(ContractError, match=r"splits.train.prefixes: .*nope.bin does not exist"):
        read_packed_corpus(tmp_path)
