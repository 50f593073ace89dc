"""The stage end to end: `run(cfg, inputs, out)` trains, checkpoints and exports to Hugging Face
through the `python -m fullchain.pretrain.hf export` subprocess. The export loads with plain
transformers (`LlamaForCausalLM`, `AutoTokenizer`) with the logits of the Megatron model in the
final checkpoint and a tokenizer that round-trips; a re-run with every step done returns the
first run's losses; continued pretraining (`init_from_hf`) starts from the exported weights."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from pretrain_testing import losses, run_in_process, tiny_config

ITERS = 30
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak."


@pytest.fixture(scope="module")
def first_run(data_artifact, tmp_path_factory):
    cfg = tiny_config(schedule={"train_iters": ITERS, "warmup_iters": 3},
                      checkpoint={"save_interval": ITERS}, validation={"eval_iters": 1},
                      export_hf=True)
    out = tmp_path_factory.mktemp("stage") / "out"
    metrics = run_in_process(cfg, data_artifact, out)
    return cfg, out, metrics


def _megatron_from_checkpoint(cfg, out, tokens):
    """Logits of the model in `out`'s latest checkpoint (a fresh one-process world)."""
    from fullchain.pretrain import checkpoint, distributed
    from fullchain.pretrain.model import build_gpt_model, causal_attention_mask, position_ids

    model_json = json.loads((out / "model.json").read_text())
    distributed.initialize(cfg.parallel, seed=cfg.seed + 1)  # other init: the load must matter
    try:
        gpt = build_gpt_model(cfg.model, cfg.parallel, model_json["padded_vocab_size"],
                              cfg.batch.seq_length)
        iteration, path = checkpoint.latest_checkpoint(out / "checkpoints")
        assert iteration == ITERS
        checkpoint.load(path, gpt)
        gpt.eval()
        batch, seq = tokens.shape
        with torch.no_grad():
            return gpt(tokens, position_ids(batch, seq), causal_attention_mask(seq))
    finally:
        distributed.destroy()


def test_run_exports_a_transformers_checkpoint_matching_megatron(first_run, data_artifact):
    from transformers import AutoTokenizer, LlamaForCausalLM

    cfg, out, metrics = first_run
    assert metrics["hf_dir"] == "hf" and metrics["iteration"] == ITERS
    curve = losses(out)
    assert len(curve) == ITERS and metrics["final_loss"] == curve[-1] < curve[0] - 1.0
    json.dumps(metrics)

    tokenizer = AutoTokenizer.from_pretrained(str(out / "hf"))
    dataset = json.loads((data_artifact / "dataset.json").read_text())
    assert len(tokenizer) == dataset["vocab_size"] == metrics["vocab_size"]
    assert tokenizer.eos_token_id == dataset["eod_id"] and tokenizer.pad_token_id == dataset["pad_id"]
    ids = tokenizer(TEXT)["input_ids"]
    assert tokenizer.decode(ids) == TEXT
    assert len(ids) >= 16

    hf = LlamaForCausalLM.from_pretrained(str(out / "hf")).eval()
    assert hf.config.vocab_size == metrics["padded_vocab_size"]
    tokens = torch.tensor([ids[:16], ids[-16:]])
    with torch.no_grad():
        hf_logits = hf(tokens).logits
    torch.testing.assert_close(hf_logits, _megatron_from_checkpoint(cfg, out, tokens),
                               rtol=1e-5, atol=1e-5)


def test_rerun_with_every_step_done_returns_the_final_loss(first_run, data_artifact):
    """A step interrupted after training (e.g. during the export) is re-run in the same `out`:
    nothing is trained, and the metrics are those of the checkpoint, not NaN."""
    cfg, out, metrics = first_run
    rows_before = (out / "metrics.jsonl").read_text()
    again = run_in_process(dataclasses.replace(cfg, export_hf=False), data_artifact, out)
    assert again["resumed_from_iteration"] == ITERS and again["iteration"] == ITERS
    assert again["final_loss"] == metrics["final_loss"]  # exactly: read back, not recomputed
    assert again["val_loss"] == metrics["val_loss"] and math.isfinite(again["val_loss"])
    assert again["val_perplexity"] == metrics["val_perplexity"]
    assert again["tokens_per_second"] is None and again["train_tokens"] == metrics["train_tokens"]
    assert (out / "metrics.jsonl").read_text() == rows_before


def _batch_loss(model, dataset, samples: range, micro_batch_size: int) -> float:
    """The training loss a step reports: mean token loss per micro-batch, averaged."""
    values = []
    for first in range(samples.start, samples.stop, micro_batch_size):
        items = [dataset[i] for i in range(first, first + micro_batch_size)]
        tokens = torch.stack([torch.as_tensor(item["tokens"]) for item in items])
        labels = torch.stack([torch.as_tensor(item["labels"]) for item in items])
        mask = torch.stack([torch.as_tensor(item["loss_mask"]) for item in items]).float()
        with torch.no_grad():
            logits = model(tokens).logits
        per_token = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
        values.append(float((per_token * mask.reshape(-1)).sum() / mask.sum()))
    return sum(values) / len(values)


def test_init_from_hf_continues_from_the_export(first_run, data_artifact, tmp_path):
    from fullchain.core.contracts import read_packed_corpus
    from fullchain.pretrain.data import build_datasets
    from transformers import LlamaForCausalLM

    cfg, out, metrics = first_run
    continued = tiny_config(schedule={"train_iters": 3, "warmup_iters": 1},
                            validation={"eval_iters": 1}, init_from_hf=str(out / "hf"))
    result = run_in_process(continued, data_artifact, tmp_path / "continued")
    first_step = losses(tmp_path / "continued")[0]
    # Starts where the first run ended (~4.6 nats), not at the ~6 of a fresh model...
    assert abs(first_step - metrics["final_loss"]) < 0.3, (first_step, metrics["final_loss"])
    assert first_step < losses(out)[0] - 1.0
    # ...exactly: step 1's loss is the exported model's loss on step 1's samples.
    spec = read_packed_corpus(data_artifact)
    batch = continued.batch
    datasets = build_datasets(spec, batch.seq_length, continued.seed,
                              {"train": continued.schedule.train_iters * batch.global_batch_size,
                               "valid": continued.validation.eval_iters * batch.global_batch_size},
                              tmp_path / "cache")
    hf = LlamaForCausalLM.from_pretrained(str(out / "hf")).eval()
    expected = _batch_loss(hf, datasets["train"], range(batch.global_batch_size),
                           batch.micro_batch_size)
    assert first_step == pytest.approx(expected, abs=1e-5)
    assert result["resumed_from_iteration"] is None
