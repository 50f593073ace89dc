"""Core attention for megatron's local layer spec through `torch.nn.functional.scaled_dot_product_attention`.

Megatron's `DotProductAttention` (what `get_gpt_layer_local_spec` uses without TransformerEngine)
is unfused: baddbmm -> masked softmax over a materialised [b, np, s, s] score tensor -> bmm.
`SDPACoreAttention` is a drop-in `core_attention` submodule with the same constructor and forward
interface that `SelfAttention` calls, computing the same function with torch's fused kernel (the
flash-attention CPU kernel for the causal case), the way Hugging Face models attend on CPU.

Mask semantics follow `DotProductAttention`: an explicit `attention_mask` (bool, True where
attention is NOT allowed) wins over `attn_mask_type`; with no mask and a causal mask type the
attention is causal. A mask that is exactly the causal one becomes `is_causal=True` (no mask
tensor reaches the kernel); any other mask is applied as an additive -10000 bias, megatron's fill.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.utils import is_layer_window_attention
from megatron.core.utils import divide

# The value megatron's `attention_mask_func` fills masked scores with.
_MASKED_SCORE = -10000.0


def is_causal_mask(mask: torch.Tensor, sq: int, sk: int) -> bool:
    """True when `mask` (megatron convention, True = masked) is the causal mask for sq == sk."""
    if mask.dtype != torch.bool or sq != sk or tuple(mask.shape[-2:]) != (sq, sk):
        return False
    causal = torch.ones(sq, sk, dtype=torch.bool, device=mask.device).triu(diagonal=1)
    return bool(torch.equal(mask, causal.expand_as(mask)))


class SDPACoreAttention(MegatronModule):
    """`DotProductAttention`'s interface on `F.scaled_dot_product_attention`.

    Inputs query [sq, b, np, hn], key/value [sk, b, ng, hn] (this tensor-parallel rank's heads and
    query groups); output [sq, b, np * hn]. Grouped-query attention maps query head i to group
    i // (np / ng), as megatron's repeat_interleave does. Not supported (raise): context
    parallelism, sliding windows, non-vanilla softmax, packed sequences, attention bias.
    """

    def __init__(self, config: Any, layer_number: int, attn_mask_type: AttnMaskType,
                 attention_type: str, attention_dropout: Optional[float] = None,
                 softmax_scale: Optional[float] = None, cp_comm_type: Optional[str] = None,
                 pg_collection: Optional[ProcessGroupCollection] = None):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("context_parallel_size: SDPACoreAttention supports only 1")
        if config.softmax_type != "vanilla":
            raise ValueError(f"softmax_type: {config.softmax_type!r} is not supported by "
                             "SDPACoreAttention (vanilla only)")
        if is_layer_window_attention(config.window_size, config.window_attn_skip_freq,
                                     layer_number):
            raise ValueError("window_size: sliding-window attention is not supported by "
                             "SDPACoreAttention")
        self.layer_number = max(1, layer_number)
        self.attn_mask_type = attn_mask_type
        self.attention_type = attention_type
        if pg_collection is None:
            pg_collection = ProcessGroupCollection.use_mpu_process_groups(required_pgs=["tp"])
        self.pg_collection = pg_collection
        self.tp_group = pg_collection.tp
        world_size = pg_collection.tp.size()
        projection_size = config.kv_channels * config.num_attention_heads
        self.hidden_size_per_partition = divide(projection_size, world_size)
        head_dim = divide(projection_size, config.num_attention_heads)
        self.num_attention_heads_per_partition = divide(config.num_attention_heads, world_size)
        self.num_query_groups_per_partition = divide(config.num_query_groups, world_size)
        # apply_query_key_layer_scaling divides the scale by layer_number and multiplies the
        # scores back before the softmax in DotProductAttention: the net scale is this one.
        self.softmax_scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale
        self.dropout_p = float(config.attention_dropout if attention_dropout is None
                               else attention_dropout)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: Optional[torch.Tensor],
                attn_mask_type: Optional[AttnMaskType] = None,
                attention_bias: Optional[torch.Tensor] = None,
                packed_seq_params: Any = None) -> torch.Tensor:
        """[sq, b, np, hn] query, [sk, b, ng, hn] key/value -> [sq, b, np * hn] context."""
        if packed_seq_params is not None:
            raise ValueError("packed_seq_params: packed sequences are not supported by "
                             "SDPACoreAttention")
        if attention_bias is not None:
            raise ValueError("attention_bias: not supported by SDPACoreAttention")
        sq, b = query.shape[0], query.shape[1]
        sk = key.shape[0]
        mask_type = self.attn_mask_type if attn_mask_type is None else attn_mask_type
        is_causal = False
        attn_mask = None
        if attention_mask is None:
            # DotProductAttention builds the causal mask only for sq > 1 (sq == 1: decoding).
            is_causal = mask_type == AttnMaskType.causal and sq > 1
            if is_causal and sq != sk:
                raise ValueError(f"attention_mask: a causal mask needs sq == sk (got {sq}, {sk})")
        elif is_causal_mask(attention_mask, sq, sk):
            is_causal = True
        else:
            attn_mask = torch.zeros(attention_mask.shape, dtype=query.dtype,
                                    device=query.device).masked_fill_(attention_mask,
                                                                      _MASKED_SCORE)
        # [s, b, n, hn] -> [b, n, s, hn] views; the kernel reads strided inputs.
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        dropout_p = self.dropout_p if self.training else 0.0
        gqa = self.num_attention_heads_per_partition != self.num_query_groups_per_partition

        def attend():
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                scale=self.softmax_scale, enable_gqa=gqa)

        if dropout_p > 0.0 and not self.config.sequence_parallel:
            with tensor_parallel.get_cuda_rng_tracker().fork():
                context = attend()
        else:
            context = attend()
        # [b, np, sq, hn] -> [sq, b, np * hn]
        return context.permute(2, 0, 1, 3).reshape(sq, b, self.hidden_size_per_partition)
