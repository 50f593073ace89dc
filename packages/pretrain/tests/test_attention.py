"""SDPACoreAttention computes what megatron's DotProductAttention computes (fp32, TP=1)."""

from __future__ import annotations

import pytest

SEQ, BATCH, HEAD_DIM = 12, 3, 8


@pytest.fixture()
def single_world():
    from fullchain.pretrain import distributed
    from fullchain.pretrain.config import ParallelConfig

    distributed.initialize(ParallelConfig(), seed=1234)
    yield
    distributed.destroy()


def _pair(heads: int, groups: int):
    from fullchain.pretrain.attention import SDPACoreAttention
    from fullchain.pretrain.compat import enable_cpu_compat
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.transformer_config import TransformerConfig

    enable_cpu_compat()
    config = TransformerConfig(num_layers=1, hidden_size=heads * HEAD_DIM,
                               num_attention_heads=heads, num_query_groups=groups,
                               kv_channels=HEAD_DIM, attention_dropout=0.0,
                               masked_softmax_fusion=False, use_cpu_initialization=True)
    kwargs = dict(config=config, layer_number=1, attn_mask_type=AttnMaskType.causal,
                  attention_type="self")
    return DotProductAttention(**kwargs), SDPACoreAttention(**kwargs)


def _qkv(heads: int, groups: int, requires_grad: bool = False):
    import torch

    generator = torch.Generator().manual_seed(heads * 10 + groups)
    return [torch.randn(SEQ, BATCH, n, HEAD_DIM, generator=generator,
                        requires_grad=requires_grad) for n in (heads, groups, groups)]


@pytest.mark.parametrize("heads, groups", [(4, 4), (4, 2), (6, 1)], ids=["mha", "gqa", "mqa"])
def test_sdpa_matches_dot_product_attention_causal(single_world, heads, groups):
    import torch
    from fullchain.pretrain.model import causal_attention_mask

    reference, ours = _pair(heads, groups)
    q, k, v = _qkv(heads, groups, requires_grad=True)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    expected = reference(q, k, v, causal_attention_mask(SEQ))
    got = ours(q2, k2, v2, causal_attention_mask(SEQ))
    assert got.shape == expected.shape == (SEQ, BATCH, heads * HEAD_DIM)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # No mask + causal mask type is causal too, as in DotProductAttention.
    torch.testing.assert_close(ours(q2, k2, v2, None), expected, rtol=1e-5, atol=1e-5)
    weights = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1))
    (expected * weights).sum().backward()
    (got * weights).sum().backward()
    for mine, theirs in ((q2, q), (k2, k), (v2, v)):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-5, atol=1e-5)


def test_sdpa_matches_dot_product_attention_other_mask(single_world):
    """A non-causal mask (here: causal plus a masked key per batch row) goes to the kernel."""
    import torch
    from fullchain.pretrain.attention import is_causal_mask
    from fullchain.pretrain.model import causal_attention_mask

    reference, ours = _pair(4, 2)
    q, k, v = _qkv(4, 2)
    mask = causal_attention_mask(SEQ).repeat(BATCH, 1, 1, 1)
    for row in range(BATCH):
        mask[row, :, 5:, row + 1] = True
    assert not is_causal_mask(mask, SEQ, SEQ)
    assert is_causal_mask(causal_attention_mask(SEQ).expand(BATCH, 1, SEQ, SEQ), SEQ, SEQ)
    torch.testing.assert_close(ours(q, k, v, mask), reference(q, k, v, mask),
                               rtol=1e-5, atol=1e-5)


def test_sdpa_rejects_what_it_does_not_support(single_world):
    import torch

    _, ours = _pair(4, 4)
    q, k, v = _qkv(4, 4)
    with pytest.raises(ValueError, match="^attention_bias:"):
        ours(q, k, v, None, attention_bias=torch.zeros(1))
    with pytest.raises(ValueError, match="^packed_seq_params:"):
        ours(q, k, v, None, packed_seq_params=object())


def test_local_spec_uses_sdpa_core_attention(single_world):
    import torch
    from fullchain.pretrain.attention import SDPACoreAttention
    from fullchain.pretrain.config import ParallelConfig
    from fullchain.pretrain.model import build_gpt_model
    from fullchain.pretrain.model_config import ModelConfig

    if torch.cuda.is_available():
        pytest.skip("the CPU local spec is under test")
    model = ModelConfig(name="tiny", num_layers=1, hidden_size=32, num_attention_heads=4,
                        num_query_groups=2, ffn_hidden_size=64, max_position_embeddings=16)
    gpt = build_gpt_model(model, ParallelConfig(), vocab_size=128, seq_length=16)
    assert isinstance(gpt.decoder.layers[0].self_attention.core_attention, SDPACoreAttention)
