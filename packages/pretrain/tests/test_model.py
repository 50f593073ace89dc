"""The model level: ModelConfig checks, the TransformerConfig translation, GPTModel build.

`layout_job` runs inside the shared 2-rank torchrun launch (conftest `parallel_runs`): it writes
the per-token losses and the gradient norm of the tiny model at TP=2 and at PP=2, which the
layout test compares with TP=1, PP=1.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from fullchain.pretrain.model_config import ModelConfig

TINY = dict(name="tiny", num_layers=2, hidden_size=64, num_attention_heads=4, num_query_groups=2,
            ffn_hidden_size=128, max_position_embeddings=64)
SEQ, BATCH, VOCAB = 16, 2, 300


# -- ModelConfig -------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, field", [
    (dict(hidden_size=66), "hidden_size"),
    (dict(num_query_groups=3), "num_query_groups"),
    (dict(num_layers=0), "num_layers"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(rotary_base=0.0), "rotary_base"),
    (dict(norm_epsilon=-1.0), "norm_epsilon"),
])
def test_model_config_rejects_bad_shapes_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        ModelConfig(**{**TINY, **overrides})


def test_model_config_tensor_parallel_check_and_parameter_count():
    cfg = ModelConfig(**TINY)
    assert cfg.head_dim == 16 and cfg.query_groups == 2
    cfg.validate_tensor_parallel(2)
    with pytest.raises(ValueError, match="^num_query_groups:"):
        cfg.validate_tensor_parallel(4)
    # embeddings (untied: in + out) + per layer (qkv, proj, fc1, fc2, 2 norms) + final norm
    per_layer = 64 * (64 + 2 * 32) + 64 * 64 + 3 * 64 * 128 + 2 * 64
    assert cfg.num_parameters(384) == 2 * 384 * 64 + 2 * per_layer + 64


def test_padded_vocab_size_is_tensor_parallel_independent():
    from fullchain.pretrain.model import padded_vocab_size

    cfg = ModelConfig(**TINY)
    assert padded_vocab_size(300, cfg, 1) == padded_vocab_size(300, cfg, 2) == 384
    assert padded_vocab_size(300, ModelConfig(**TINY, make_vocab_size_divisible_by=100), 8) == 400
    assert padded_vocab_size(300, ModelConfig(**TINY, vocab_size=1000), 1) == 1024
    with pytest.raises(ValueError, match="^vocab_size:"):
        padded_vocab_size(300, ModelConfig(**TINY, vocab_size=200), 1)


CONF_MODEL = Path(__file__).resolve().parents[3] / "conf" / "model"


@pytest.mark.parametrize("preset, vocab, millions", [
    ("tiny", None, None), ("small", 8192, 16.9), ("internlm2_1_8b", None, 1889.1),
    ("internlm2_7b", None, 7737.7), ("llama3_8b", None, 8030.3)])
def test_presets_load_and_have_their_published_size(preset, vocab, millions):
    import yaml
    from fullchain.pretrain.model import padded_vocab_size

    cfg = ModelConfig(**yaml.safe_load((CONF_MODEL / f"{preset}.yaml").read_text()))
    assert cfg.name == preset
    if millions is not None:
        rows = padded_vocab_size(vocab or cfg.vocab_size, cfg, 1)
        assert cfg.num_parameters(rows) / 1e6 == pytest.approx(millions, abs=0.1)
    for tp in (1, 2, 8 if preset != "tiny" and preset != "small" else 2):
        cfg.validate_tensor_parallel(tp)


# -- TransformerConfig translation -------------------------------------------------------------

def test_to_transformer_config_llama_family():
    import torch
    import torch.nn.functional as F
    from fullchain.pretrain.config import ParallelConfig
    from fullchain.pretrain.model import to_transformer_config

    cfg = ModelConfig(**TINY, norm_epsilon=1e-6, init_method_std=0.01)
    tc = to_transformer_config(cfg, ParallelConfig(tensor_parallel_size=2), "fp32")
    assert (tc.num_layers, tc.hidden_size, tc.num_attention_heads, tc.num_query_groups,
            tc.ffn_hidden_size, tc.kv_channels) == (2, 64, 4, 2, 128, 16)
    assert tc.normalization == "RMSNorm" and tc.layernorm_epsilon == 1e-6
    assert tc.gated_linear_unit and tc.activation_func is F.silu
    assert not tc.add_bias_linear and not tc.add_qkv_bias
    assert tc.init_method_std == 0.01 and tc.tensor_model_parallel_size == 2
    assert tc.params_dtype == torch.float32 and not tc.bf16
    assert tc.use_cpu_initialization == (not torch.cuda.is_available())
    assert tc.recompute_granularity is None

    bf16 = to_transformer_config(cfg, ParallelConfig(), "bf16", recompute="selective")
    assert bf16.bf16 and bf16.params_dtype == torch.bfloat16
    assert bf16.recompute_granularity == "selective" and bf16.recompute_modules == ["core_attn"]
    full = to_transformer_config(cfg, ParallelConfig(), "auto", recompute="full")
    assert (full.recompute_granularity, full.recompute_method, full.recompute_num_layers) == (
        "full", "uniform", 1)
    assert full.bf16 == torch.cuda.is_available()


def test_to_transformer_config_rejects_bad_layouts():
    from fullchain.pretrain.config import ParallelConfig
    from fullchain.pretrain.model import to_transformer_config

    cfg = ModelConfig(**TINY)
    with pytest.raises(ValueError, match="^num_attention_heads:"):
        to_transformer_config(ModelConfig(**{**TINY, "num_query_groups": None,
                                             "num_attention_heads": 2, "hidden_size": 64}),
                              ParallelConfig(tensor_parallel_size=4))
    with pytest.raises(ValueError, match="^pipeline_parallel_size:"):
        to_transformer_config(ModelConfig(**{**TINY, "num_layers": 3}),
                              ParallelConfig(pipeline_parallel_size=2))
    with pytest.raises(ValueError, match="^recompute:"):
        to_transformer_config(cfg, ParallelConfig(), recompute="some")
    with pytest.raises(ValueError, match="^precision:"):
        to_transformer_config(cfg, ParallelConfig(), precision="fp16")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CPU-only expectation")
def test_sequence_parallel_needs_transformer_engine_on_cpu():
    from fullchain.pretrain.config import ParallelConfig
    from fullchain.pretrain.model import to_transformer_config

    with pytest.raises(ValueError, match="^sequence_parallel:"):
        to_transformer_config(ModelConfig(**TINY),
                              ParallelConfig(tensor_parallel_size=2, sequence_parallel=True))


# -- GPTModel ----------------------------------------------------------------------------------

@pytest.fixture()
def single_world():
    from fullchain.pretrain import distributed
    from fullchain.pretrain.config import ParallelConfig

    parallel = ParallelConfig()
    distributed.initialize(parallel, seed=1234)
    yield parallel
    distributed.destroy()


def _batch():
    import torch

    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, VOCAB, (BATCH, SEQ), generator=generator)


def test_build_gpt_model_shapes_mask_and_rope(single_world):
    import torch
    from fullchain.pretrain.model import (
        build_gpt_model,
        causal_attention_mask,
        padded_vocab_size,
        position_ids,
    )

    cfg = ModelConfig(**TINY, rotary_base=5e5)
    vocab = padded_vocab_size(VOCAB, cfg, 1)
    gpt = build_gpt_model(cfg, single_world, vocab, SEQ)
    assert sum(p.numel() for p in gpt.parameters()) == cfg.num_parameters(vocab)
    assert all("bias" not in name for name, _ in gpt.named_parameters())
    expected = 1.0 / (5e5 ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16))
    torch.testing.assert_close(gpt.rotary_pos_emb.inv_freq.float().cpu(), expected)

    tokens = _batch()
    mask = causal_attention_mask(SEQ)
    assert mask.dtype == torch.bool and mask.shape == (1, 1, SEQ, SEQ) and mask[0, 0, 0, 1]
    with torch.no_grad():
        logits = gpt(tokens, position_ids(BATCH, SEQ), mask)
        assert logits.shape == (BATCH, SEQ, vocab)
        changed = tokens.clone()
        changed[:, -1] = (changed[:, -1] + 1) % VOCAB
        logits2 = gpt(changed, position_ids(BATCH, SEQ), mask)
    # Causal: changing the last token changes only the last position.
    torch.testing.assert_close(logits[:, :-1], logits2[:, :-1])
    assert not torch.allclose(logits[:, -1], logits2[:, -1])

    # Same seed, same weights; another seed, other weights.
    again = build_gpt_model(cfg, single_world, vocab, SEQ, seed=torch.initial_seed())
    other = build_gpt_model(cfg, single_world, vocab, SEQ, seed=7)
    for (name, a), b, c in zip(gpt.named_parameters(), again.parameters(), other.parameters()):
        assert torch.equal(a, b), name
        if "layernorm" not in name:
            assert not torch.equal(a, c), name
    qkv = gpt.decoder.layers[0].self_attention.linear_qkv.weight
    assert abs(qkv.std().item() - 0.02) < 0.003


def test_build_gpt_model_tied_and_recompute(single_world):
    from fullchain.pretrain.model import build_gpt_model, causal_attention_mask, position_ids

    cfg = ModelConfig(**TINY, tie_word_embeddings=True)
    gpt = build_gpt_model(cfg, single_world, 384, SEQ)
    assert gpt.output_layer.weight is None
    assert sum(p.numel() for p in gpt.parameters()) == cfg.num_parameters(384)
    tokens = _batch()
    losses = {}
    for recompute in ("none", "selective", "full"):
        model = build_gpt_model(cfg, single_world, 384, SEQ, recompute=recompute)
        loss = model(tokens, position_ids(BATCH, SEQ), causal_attention_mask(SEQ),
                     labels=tokens).mean()
        loss.backward()
        grad = model.embedding.word_embeddings.weight.grad
        losses[recompute] = (loss.item(), grad.norm().item())
    assert losses["selective"] == pytest.approx(losses["none"], rel=1e-6)
    assert losses["full"] == pytest.approx(losses["none"], rel=1e-6)
    with pytest.raises(ValueError, match="^seq_length:"):
        build_gpt_model(cfg, single_world, 384, 65)


# -- layouts: TP=2 and PP=2 start from the TP=1 model ------------------------------------------

def _layout_result(tp: int, pp: int) -> dict:
    """Per-token losses and the full gradient norm of the tiny model at this layout."""
    import torch
    from fullchain.pretrain import distributed
    from fullchain.pretrain.config import ParallelConfig
    from fullchain.pretrain.model import (
        build_gpt_model,
        causal_attention_mask,
        padded_vocab_size,
        position_ids,
    )
    from megatron.core import tensor_parallel
    from megatron.core.pipeline_parallel import get_forward_backward_func

    parallel = ParallelConfig(tensor_parallel_size=tp, pipeline_parallel_size=pp)
    distributed.initialize(parallel, seed=1234)
    cfg = ModelConfig(**TINY)
    gpt = build_gpt_model(cfg, parallel, padded_vocab_size(VOCAB, cfg, tp), SEQ)
    tokens = _batch()
    per_token = []

    def forward_step(data_iterator, model):
        batch = next(data_iterator)
        output = model(batch, position_ids(BATCH, SEQ), causal_attention_mask(SEQ), labels=batch)

        def loss_func(output_tensor):
            per_token.append(output_tensor.detach().clone())
            loss = output_tensor.float().mean()
            return loss, {"loss": loss.detach()}
        return output, loss_func

    get_forward_backward_func()(forward_step_func=forward_step, data_iterator=iter([tokens]),
                                model=[gpt], num_microbatches=1, seq_length=SEQ,
                                micro_batch_size=BATCH, forward_only=False)
    squares = torch.zeros(1)
    for param in gpt.parameters():
        if tensor_parallel.param_is_not_tensor_parallel_duplicate(param):
            squares += param.grad.float().pow(2).sum()
    torch.distributed.all_reduce(squares)
    losses = per_token[0] if per_token else torch.zeros(BATCH, SEQ)
    # The last pipeline stage (the highest ranks in megatron's order) has the losses.
    torch.distributed.broadcast(losses, src=torch.distributed.get_world_size() - 1)
    distributed.destroy()
    return {"losses": losses.flatten().tolist(), "grad_norm": math.sqrt(squares.item())}


def layout_job(tp: int, pp: int, out_file: str) -> None:
    """A job of the shared 2-rank launch (conftest `parallel_runs`): rank 0 writes the result."""
    result = _layout_result(tp, pp)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(out_file).write_text(json.dumps(result))


@pytest.mark.parametrize("tp, pp", [(2, 1), (1, 2)], ids=["tp2", "pp2"])
def test_tensor_and_pipeline_parallel_match_single_process(tp, pp, parallel_runs):
    import torch

    reference = _layout_result(1, 1)
    result = json.loads((parallel_runs / f"layout_tp{tp}pp{pp}.json").read_text())
    torch.testing.assert_close(torch.tensor(result["losses"]),
                               torch.tensor(reference["losses"]), rtol=1e-5, atol=1e-5)
    assert result["grad_norm"] == pytest.approx(reference["grad_norm"], rel=1e-5)
