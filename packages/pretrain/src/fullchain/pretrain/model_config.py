"""Shape of the decoder-only transformer (InternLM2 / Llama family). Stdlib only.

The driver validates a spec against this class without importing torch or megatron, so this
module must stay free of heavy imports. The translation to megatron's TransformerConfig lives
in `model.py` (`to_transformer_config`), the only place that knows megatron's argument names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    """A Llama-style model: RMSNorm, SwiGLU MLP, RoPE, grouped-query attention, no biases."""

    name: str = "tiny"
    """Preset name, for logs and the HF export's config (does not change the weights' shape)."""
    num_layers: int = 2
    """Number of transformer blocks."""
    hidden_size: int = 64
    """Width of the residual stream (d_model)."""
    num_attention_heads: int = 4
    """Number of query heads; head_dim = hidden_size / num_attention_heads."""
    num_query_groups: int | None = None
    """Key/value heads for grouped-query attention; None = num_attention_heads (plain MHA)."""
    ffn_hidden_size: int = 176
    """Inner width of the SwiGLU MLP (each of the gate and up projections)."""
    vocab_size: int | None = None
    """Embedding rows before padding; None = the data artifact's tokenizer size."""
    make_vocab_size_divisible_by: int = 128
    """Pad the vocabulary to a multiple of this times the tensor-parallel size (fast matmuls)."""
    max_position_embeddings: int = 2048
    """Longest sequence the model is meant for (RoPE is computed up to this length)."""
    rotary_base: float = 10000.0
    """RoPE base (theta): 10k for Llama 2, 1e6 for InternLM2, 5e5 for Llama 3."""
    norm_epsilon: float = 1e-5
    """Epsilon of the RMSNorm layers."""
    tie_word_embeddings: bool = False
    """Share the input embedding matrix with the output projection."""
    init_method_std: float = 0.02
    """Standard deviation of the normal weight initialisation."""

    def __post_init__(self) -> None:
        for key in ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size",
                    "make_vocab_size_divisible_by", "max_position_embeddings"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}: {value!r} must be a positive integer")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size: {self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}")
        if self.num_query_groups is not None:
            if (isinstance(self.num_query_groups, bool) or not isinstance(self.num_query_groups, int)
                    or self.num_query_groups < 1):
                raise ValueError(
                    f"num_query_groups: {self.num_query_groups!r} must be a positive integer or null")
            if self.num_attention_heads % self.num_query_groups:
                raise ValueError(
                    f"num_query_groups: num_attention_heads={self.num_attention_heads} is not "
                    f"divisible by num_query_groups={self.num_query_groups}")
        if self.vocab_size is not None and (
                isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int)
                or self.vocab_size < 1):
            raise ValueError(f"vocab_size: {self.vocab_size!r} must be a positive integer or null")
        if not float(self.rotary_base) > 0:
            raise ValueError(f"rotary_base: {self.rotary_base!r} must be > 0")
        if not float(self.norm_epsilon) > 0:
            raise ValueError(f"norm_epsilon: {self.norm_epsilon!r} must be > 0")
        if not float(self.init_method_std) > 0:
            raise ValueError(f"init_method_std: {self.init_method_std!r} must be > 0")
        if not self.name:
            raise ValueError("name: must be a non-empty string")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @property
    def query_groups(self) -> int:
        """Number of key/value heads (num_query_groups, or num_attention_heads for MHA)."""
        return self.num_query_groups or self.num_attention_heads

    def num_parameters(self, vocab_size: int) -> int:
        """Parameter count for a (padded) vocabulary size: embeddings, blocks, final norm."""
        kv = self.query_groups * self.head_dim
        attention = self.hidden_size * (self.hidden_size + 2 * kv) + self.hidden_size ** 2
        mlp = 3 * self.hidden_size * self.ffn_hidden_size
        block = attention + mlp + 2 * self.hidden_size
        embeddings = vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * block + embeddings + self.hidden_size

    def validate_tensor_parallel(self, tensor_parallel_size: int) -> None:
        """Raise ValueError naming the field if this shape cannot be split over TP ranks."""
        tp = tensor_parallel_size
        if self.num_attention_heads % tp:
            raise ValueError(
                f"num_attention_heads: {self.num_attention_heads} is not divisible by "
                f"tensor_parallel_size={tp}")
        if self.query_groups % tp:
            raise ValueError(
                f"num_query_groups: {self.query_groups} is not divisible by "
                f"tensor_parallel_size={tp}")
        if self.ffn_hidden_size % tp:
            raise ValueError(
                f"ffn_hidden_size: {self.ffn_hidden_size} is not divisible by "
                f"tensor_parallel_size={tp}")
        if self.hidden_size % tp:
            raise ValueError(
                f"hidden_size: {self.hidden_size} is not divisible by tensor_parallel_size={tp}")
