"""Megatron <-> Hugging Face Llama: logits match, round trips, the CLI on a TP=2 checkpoint.

Run under torchrun (`... test_hf.py CKPT_DIR`) this file is also its own worker: it saves the
tiny model, built at TP=2, as a dist checkpoint in the pretrain artifact layout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fullchain.pretrain.model_config import ModelConfig

TINY = dict(name="tiny", num_layers=2, hidden_size=64, num_attention_heads=4, num_query_groups=2,
            ffn_hidden_size=128, max_position_embeddings=64, rotary_base=5e5)
VOCAB, SEQ, SEED = 384, 16, 1234


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _tokens():
    import torch

    return torch.randint(0, 300, (2, SEQ), generator=torch.Generator().manual_seed(0))


def _megatron_logits(gpt):
    import torch
    from fullchain.pretrain.model import causal_attention_mask, position_ids

    with torch.no_grad():
        return gpt(_tokens(), position_ids(2, SEQ), causal_attention_mask(SEQ))


def _hf_logits(hf_dir):
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(hf_dir)).eval()
    with torch.no_grad():
        return model(_tokens()).logits


def _tokenizer(path: Path, vocab_size: int = 300) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size,
                                  special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(["to be or not to be, that is the question"] * 20, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                            pad_token="<|pad|>").save_pretrained(str(path))
    return path


@pytest.fixture()
def single_world():
    from fullchain.pretrain import distributed
    from fullchain.pretrain.config import ParallelConfig

    parallel = ParallelConfig()
    distributed.initialize(parallel, seed=SEED)
    yield parallel
    distributed.destroy()


@pytest.mark.parametrize("tied", [False, True])
def test_export_logits_match_and_import_round_trips(single_world, tmp_path, tied):
    import torch
    from fullchain.pretrain.hf import export_hf, load_hf_into
    from fullchain.pretrain.model import build_gpt_model

    cfg = ModelConfig(**TINY, tie_word_embeddings=tied)
    gpt = build_gpt_model(cfg, single_world, VOCAB, SEQ)
    export_hf(gpt, cfg, tmp_path / "hf", _tokenizer(tmp_path / "tok"))
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == VOCAB
    assert config["num_key_value_heads"] == 2 and config["tie_word_embeddings"] == tied
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 0 and generation["pad_token_id"] == 1

    reference = _megatron_logits(gpt)
    torch.testing.assert_close(_hf_logits(tmp_path / "hf"), reference, rtol=1e-5, atol=1e-5)

    other = build_gpt_model(cfg, single_world, VOCAB, SEQ, seed=SEED + 1)
    assert not torch.allclose(_megatron_logits(other), reference)
    load_hf_into(other, tmp_path / "hf")
    torch.testing.assert_close(_megatron_logits(other), reference, rtol=0, atol=0)


def test_bad_inputs_are_named(single_world, tmp_path):
    from fullchain.pretrain.hf import export_hf, load_hf_into
    from fullchain.pretrain.model import build_gpt_model

    cfg = ModelConfig(**TINY)
    gpt = build_gpt_model(cfg, single_world, 256, SEQ)
    with pytest.raises(ValueError, match="^vocab_size:"):
        export_hf(gpt, cfg, tmp_path / "small", _tokenizer(tmp_path / "tok", vocab_size=300))
    export_hf(build_gpt_model(cfg, single_world, VOCAB, SEQ), cfg, tmp_path / "hf", None)
    with pytest.raises(ValueError, match="^vocab_size:"):
        load_hf_into(gpt, tmp_path / "hf", cfg)
    wider = build_gpt_model(ModelConfig(**{**TINY, "ffn_hidden_size": 192}), single_world,
                            VOCAB, SEQ)
    with pytest.raises(ValueError, match="layers.0.gate"):
        load_hf_into(wider, tmp_path / "hf", ModelConfig(**{**TINY, "ffn_hidden_size": 192}))
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_hf_into(gpt, tmp_path, cfg)


def test_cli_export_from_tp2_checkpoint_and_import(tmp_path):
    """A checkpoint saved at TP=2 exports through the CLI with logits equal to the TP=1 model."""
    import torch
    from fullchain.pretrain import distributed
    from fullchain.pretrain.config import ParallelConfig
    from fullchain.pretrain.model import build_gpt_model

    artifact = tmp_path / "pretrain"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         __file__, str(artifact)], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]

    cli = [sys.executable, "-m", "fullchain.pretrain.hf"]
    proc = subprocess.run(cli + [
        "export", "--checkpoint", str(artifact / "checkpoints"), "--model-config",
        str(artifact / "model.json"), "--seq-length", str(SEQ), "--tokenizer",
        str(_tokenizer(tmp_path / "tok")), "--out", str(tmp_path / "hf")],
        env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]
    # The same CLI in-process (one subprocess above already covers `python -m`).
    from fullchain.pretrain.hf import main
    from megatron.core import dist_checkpointing

    main(["import", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "imported")])

    parallel = ParallelConfig()
    distributed.initialize(parallel, seed=SEED)
    try:
        cfg = ModelConfig(**TINY)
        reference = _megatron_logits(build_gpt_model(cfg, parallel, VOCAB, SEQ))
        torch.testing.assert_close(_hf_logits(tmp_path / "hf"), reference, rtol=1e-5, atol=1e-5)
        fresh = build_gpt_model(cfg, parallel, VOCAB, SEQ, seed=5)
        loaded = dist_checkpointing.load({"model": fresh.sharded_state_dict()},
                                         str(tmp_path / "imported"))
        fresh.load_state_dict(loaded["model"])
        torch.testing.assert_close(_megatron_logits(fresh), reference, rtol=0, atol=0)
    finally:
        distributed.destroy()

    with pytest.raises(FileNotFoundError, match="not a dist checkpoint"):
        main(["export", "--checkpoint", str(tmp_path), "--model-config",
              str(artifact / "model.json"), "--out", str(tmp_path / "x")])
    with pytest.raises(FileExistsError, match="not empty"):
        main(["import", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "imported")])


def _save_tp2_checkpoint(artifact: Path) -> None:
    """Worker: the pretrain artifact layout (model.json, checkpoints/iter_*, latest.json) at TP=2."""
    import dataclasses

    import torch
    from fullchain.pretrain import distributed
    from fullchain.pretrain.config import ParallelConfig
    from fullchain.pretrain.model import build_gpt_model
    from megatron.core import dist_checkpointing

    parallel = ParallelConfig(tensor_parallel_size=2)
    distributed.initialize(parallel, seed=SEED)
    cfg = ModelConfig(**TINY)
    gpt = build_gpt_model(cfg, parallel, VOCAB, SEQ)
    iteration = artifact / "checkpoints" / "iter_0000001"
    if torch.distributed.get_rank() == 0:
        iteration.mkdir(parents=True)
        (artifact / "model.json").write_text(json.dumps(
            {**dataclasses.asdict(cfg), "padded_vocab_size": VOCAB}))
    torch.distributed.barrier()
    dist_checkpointing.save({"model": gpt.sharded_state_dict(), "iteration": 1}, str(iteration))
    if torch.distributed.get_rank() == 0:
        (artifact / "checkpoints" / "latest.json").write_text(
            json.dumps({"iteration": 1, "path": iteration.name}))
    distributed.destroy()


if __name__ == "__main__":
    _save_tp2_checkpoint(Path(sys.argv[1]))
