"""Megatron <-> Hugging Face Llama: logits match, round trips, the CLI on a TP=2 checkpoint.

`save_tp2_checkpoint` runs inside the shared 2-rank torchrun launch (conftest `parallel_runs`):
it saves the tiny model, built at TP=2, as a dist checkpoint in the pretrain artifact layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fullchain.pretrain.model_config import ModelConfig

TINY = dict(name="tiny", num_layers=2, hidden_size=64, num_attention_heads=4, num_query_groups=2,
            ffn_hidden_size=128, max_position_embeddings=64, rotary_base=5e5)
VOCAB, SEQ, SEED = 384, 16, 1234


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


def test_cli_export_from_tp2_checkpoint_and_import(parallel_runs, tmp_path):
    """A checkpoint saved at TP=2 exports through the CLI with logits equal to the TP=1 model.

    The CLI runs in-process here; test_stage covers `python -m fullchain.pretrain.hf export` as
    the subprocess the stage starts."""
    import torch
    from fullchain.pretrain import distributed
    from fullchain.pretrain.config import ParallelConfig
    from fullchain.pretrain.hf import main
    from fullchain.pretrain.model import build_gpt_model
    from megatron.core import dist_checkpointing

    artifact = parallel_runs / "hf_tp2"
    main(["export", "--checkpoint", str(artifact / "checkpoints"), "--model-config",
          str(artifact / "model.json"), "--seq-length", str(SEQ), "--tokenizer",
          str(_tokenizer(tmp_path / "tok")), "--out", str(tmp_path / "hf")])
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


def save_tp2_checkpoint(artifact: str) -> None:
    """A job of the shared 2-rank launch (conftest `parallel_runs`): the pretrain artifact layout (model.json, checkpoints/iter_*, latest.json) at TP=2."""
    import dataclasses

    import torch
    from fullchain.pretrain import distributed
    from fullchain.pretrain.config import ParallelConfig
    from fullchain.pretrain.model import build_gpt_model
    from megatron.core import dist_checkpointing

    artifact = Path(artifact)
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
