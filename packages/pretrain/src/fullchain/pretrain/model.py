"""Our `ModelConfig` -> megatron-core's `TransformerConfig` and `GPTModel` (Llama/InternLM2 family).

`to_transformer_config` is the one translation from YAML-friendly fields to megatron's objects;
everything megatron-specific about the architecture is decided there: RMSNorm, SwiGLU
(`gated_linear_unit` + silu), no biases, grouped-query attention, RoPE, no dropout.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
from typing import Any

from fullchain.pretrain.model_config import ModelConfig

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
RECOMPUTE = ("none", "selective", "full")


def resolve_precision(precision: str) -> str:
    """"auto" -> bf16 with CUDA, fp32 on CPU (CPU bf16 matmuls are slower than fp32 here)."""
    import torch

    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} must be one of auto, {', '.join(PRECISIONS)}")
    return precision


def transformer_engine_available() -> bool:
    """TransformerEngine is used only when it is installed AND a CUDA device is present."""
    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("transformer_engine") is None:
        return False
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception as error:  # a broken TE install must not stop training on the local spec
        logger.warning("transformer_engine present but unusable (%s); using the local spec", error)
        return False
    return True


def padded_vocab_size(vocab_size: int, model: ModelConfig, tensor_parallel_size: int) -> int:
    """Round the vocabulary up to a multiple of lcm(make_vocab_size_divisible_by, TP).

    Megatron-LM pads to a multiple of divisible_by * TP, which gives a different embedding shape
    at every TP size: a checkpoint trained at TP=2 would then not load at TP=1 and the two runs
    would not start from the same weights. The lcm keeps the shape TP-independent whenever TP
    divides make_vocab_size_divisible_by (128 covers TP 1-128 in powers of two).
    `model.vocab_size`, when set, is the embedding size asked for and must hold the tokenizer's
    `vocab_size` ids; raises ValueError naming `vocab_size` otherwise.
    """
    if vocab_size < 1:
        raise ValueError(f"vocab_size: {vocab_size} must be positive")
    wanted = vocab_size
    if model.vocab_size is not None:
        if model.vocab_size < vocab_size:
            raise ValueError(
                f"vocab_size: model.vocab_size={model.vocab_size} is smaller than the tokenizer's "
                f"{vocab_size} tokens")
        wanted = model.vocab_size
    multiple = math.lcm(model.make_vocab_size_divisible_by, tensor_parallel_size)
    return -(-wanted // multiple) * multiple


def to_transformer_config(model: ModelConfig, parallel: Any, precision: str = "fp32",
                          recompute: str = "none"):
    """Translate a ModelConfig + ParallelConfig to megatron-core's TransformerConfig.

    precision: "fp32" | "bf16" | "auto"; recompute: "none" | "selective" (attention core only) |
    "full" (every layer recomputed in backward). Sequence parallel is honoured only with
    TransformerEngine (megatron's local spec needs it or Apex for the fused norms).
    """
    import torch
    import torch.nn.functional as F
    from megatron.core.transformer.transformer_config import TransformerConfig

    precision = resolve_precision(precision)
    if recompute not in RECOMPUTE:
        raise ValueError(f"recompute: {recompute!r} must be one of {', '.join(RECOMPUTE)}")
    tp = parallel.tensor_parallel_size
    pp = parallel.pipeline_parallel_size
    model.validate_tensor_parallel(tp)
    if model.num_layers % pp:
        raise ValueError(
            f"pipeline_parallel_size: {pp} does not divide model.num_layers={model.num_layers}")
    sequence_parallel = bool(getattr(parallel, "sequence_parallel", False))
    if sequence_parallel and not transformer_engine_available():
        raise ValueError(
            "sequence_parallel: needs TransformerEngine on a CUDA device (not available here)")
    bf16 = precision == "bf16"
    recompute_kwargs: dict[str, Any] = {}
    if recompute == "selective":
        recompute_kwargs = {"recompute_granularity": "selective", "recompute_modules": ["core_attn"]}
    elif recompute == "full":
        recompute_kwargs = {"recompute_granularity": "full", "recompute_method": "uniform",
                            "recompute_num_layers": 1}
    return TransformerConfig(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_query_groups=model.query_groups,
        ffn_hidden_size=model.ffn_hidden_size,
        kv_channels=model.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=model.norm_epsilon,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=model.init_method_std,
        # Megatron's default scales the output projections' init by 1/sqrt(2 * num_layers).
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        sequence_parallel=sequence_parallel,
        # CPU init draws each full matrix from the CPU generator and then splits it: the same
        # weights at every TP size (what makes TP=2 losses equal TP=1 for one seed).
        use_cpu_initialization=not torch.cuda.is_available(),
        # Must stay on: megatron sets the tensor-parallel attributes of its weights (which the
        # grad-norm and checkpoint code read) only inside its init. build_gpt_model then redraws
        # the values with init_weights, independent of the TP/PP layout.
        perform_initialization=True,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        pipeline_dtype=torch.bfloat16 if bf16 else torch.float32,
        autocast_dtype=torch.bfloat16 if bf16 else torch.float32,
        # Fused kernels exist only on CUDA (and need apex/TE for some); plain torch on CPU.
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        **recompute_kwargs,
    )


def layer_spec(config: Any, transformer_impl: str = "auto"):
    """TransformerEngine's layer spec or megatron's local one: `transformer_impl` as resolved by
    the config ("auto": TE when it imports and CUDA is present).

    The local spec's core attention is swapped for `attention.SDPACoreAttention` (torch's fused
    scaled_dot_product_attention; megatron's own `DotProductAttention` materialises the scores
    and the masked softmax, ~10% slower per training step on CPU). Same function, same weights.
    """
    from fullchain.pretrain.attention import SDPACoreAttention
    from megatron.core.models.gpt import gpt_layer_specs

    if transformer_impl == "auto":
        transformer_impl = "transformer_engine" if transformer_engine_available() else "local"
    if transformer_impl == "transformer_engine":
        return gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec()
    spec = gpt_layer_specs.get_gpt_layer_local_spec(normalization="RMSNorm")
    spec.submodules.self_attention.submodules.core_attention = SDPACoreAttention
    return spec


def build_gpt_model(model: ModelConfig, parallel: Any, vocab_size: int, seq_length: int,
                    precision: str = "fp32", recompute: str = "none",
                    pre_process: bool | None = None, post_process: bool | None = None,
                    seed: int | None = None, transformer_impl: str = "auto"):
    """Build this rank's GPTModel chunk (needs `distributed.initialize` first).

    `vocab_size` is the PADDED size (see `padded_vocab_size`). pre/post_process default to
    "this rank is the first/last pipeline stage". Weights come from `init_weights` with `seed`
    (default: `torch.initial_seed()`, i.e. the seed `distributed.initialize` set), so every
    TP/PP layout starts from the same model. On a GPU the model lives on the current device.
    """
    import torch
    from fullchain.pretrain.compat import enable_cpu_compat
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    enable_cpu_compat()
    if seq_length > model.max_position_embeddings:
        raise ValueError(
            f"seq_length: {seq_length} exceeds model.max_position_embeddings="
            f"{model.max_position_embeddings}")
    tp = parallel.tensor_parallel_size
    if vocab_size % tp:
        raise ValueError(
            f"vocab_size: {vocab_size} is not divisible by tensor_parallel_size={tp} "
            "(pass padded_vocab_size(...))")
    config = to_transformer_config(model, parallel, precision, recompute)
    if pre_process is None:
        pre_process = parallel_state.is_pipeline_first_stage(ignore_virtual=True)
    if post_process is None:
        post_process = parallel_state.is_pipeline_last_stage(ignore_virtual=True)
    gpt = GPTModel(
        config=config,
        transformer_layer_spec=layer_spec(config, transformer_impl),
        vocab_size=vocab_size,
        max_sequence_length=model.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        parallel_output=True,
        share_embeddings_and_output_weights=model.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_percent=1.0,
        rotary_base=model.rotary_base,
    )
    if torch.cuda.is_available():
        gpt.cuda(torch.cuda.current_device())
    if config.bf16 and not torch.cuda.is_available():
        gpt.to(dtype=torch.bfloat16)
    init_weights(gpt, model, torch.initial_seed() if seed is None else seed)
    return gpt


def _seed_for(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63 - 1)


def _normal(shape: tuple, std: float, seed: int, name: str, device: Any):
    import torch

    generator = torch.Generator(device=device).manual_seed(_seed_for(seed, name))
    return torch.empty(shape, dtype=torch.float32, device=device).normal_(
        0.0, std, generator=generator)


def init_weights(gpt: Any, model: ModelConfig, seed: int) -> None:
    """Initialise this rank's chunk exactly as the TP=1, PP=1 model with the same seed would be.

    Each full (unsplit) matrix is drawn from its own generator seeded by (seed, global name) and
    this rank's slice is copied in, so the weights depend neither on the TP/PP layout nor on the
    order megatron builds modules in (megatron's own CPU init draws sequentially from one stream,
    which changes with PP). Normal(0, init_method_std); the two output projections of each block
    use std / sqrt(2 * num_layers) (megatron's and GPT-2's scaled init); RMSNorm weights are 1.
    The last pipeline stage's copy of tied embeddings is drawn under the embedding's name.
    """
    import torch

    std = model.init_method_std
    scaled = std / math.sqrt(2.0 * model.num_layers)
    stds = {"qkv": std, "proj": scaled, "gate": std, "up": std, "fc2": scaled,
            "embedding": std, "output_layer": std}

    def full(name: str, shape: tuple, device: Any):
        kind = name.rsplit(".", 1)[-1]
        if kind.endswith("norm"):
            return torch.ones(shape, dtype=torch.float32, device=device)
        return _normal(shape, stds[kind], seed, name, device)

    fill_from_full(gpt, model, full)


def fill_from_full(gpt: Any, model: ModelConfig, full: Any) -> None:
    """Copy this rank's TP/PP slice of every weight from full (TP=1, PP=1 layout) tensors.

    `full(name, shape, device)` returns the whole tensor for a canonical name: "embedding",
    "output_layer" (asked as "embedding" when tied), "final_norm", and per global layer i
    "layers.{i}.{input_norm, qkv, proj, post_norm, gate, up, fc2}". The qkv matrix is megatron's
    per-group layout [q (heads/groups * head_dim), k, v] x groups. Used by `init_weights` and
    by the Hugging Face import (`hf.load_hf_into`), so both work at any TP/PP layout.
    """
    import torch
    from megatron.core import parallel_state

    tp = parallel_state.get_tensor_model_parallel_world_size()
    rank = parallel_state.get_tensor_model_parallel_rank()
    h, ffn = model.hidden_size, model.ffn_hidden_size
    qkv_rows = (model.num_attention_heads + 2 * model.query_groups) * model.head_dim

    def split(tensor, dim: int):
        return tensor.chunk(tp, dim=dim)[rank]

    def fill(param, value, name: str) -> None:
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(
                f"{name}: shape {tuple(value.shape)} does not fit this rank's parameter "
                f"{tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(value)

    if getattr(gpt, "pre_process", False):
        weight = gpt.embedding.word_embeddings.weight
        fill(weight, split(full("embedding", (weight.shape[0] * tp, h), weight.device), 0),
             "embedding")
    if getattr(gpt, "post_process", False) and gpt.output_layer.weight is not None:
        weight = gpt.output_layer.weight
        name = "embedding" if model.tie_word_embeddings else "output_layer"
        fill(weight, split(full(name, (weight.shape[0] * tp, h), weight.device), 0), name)
    for layer in gpt.decoder.layers:
        prefix = f"layers.{layer.layer_number - 1}"
        attention, mlp = layer.self_attention, layer.mlp
        device = attention.linear_qkv.weight.device
        fill(attention.linear_qkv.weight,
             split(full(f"{prefix}.qkv", (qkv_rows, h), device), 0), f"{prefix}.qkv")
        fill(attention.linear_proj.weight,
             split(full(f"{prefix}.proj", (h, h), device), 1), f"{prefix}.proj")
        # A TP rank holds [its gate rows; its up rows], not a contiguous slice of [gate; up].
        gate = split(full(f"{prefix}.gate", (ffn, h), device), 0)
        up = split(full(f"{prefix}.up", (ffn, h), device), 0)
        fill(mlp.linear_fc1.weight, torch.cat([gate, up], dim=0), f"{prefix}.gate/up")
        fill(mlp.linear_fc2.weight,
             split(full(f"{prefix}.fc2", (h, ffn), device), 1), f"{prefix}.fc2")
        # Local spec: separate RMSNorm modules; TE spec: norms fused into the next linear.
        for kind, norm_weight in (
                ("input_norm", getattr(layer.input_layernorm, "weight", None)),
                ("input_norm", getattr(attention.linear_qkv, "layer_norm_weight", None)),
                ("post_norm", getattr(layer.pre_mlp_layernorm, "weight", None)),
                ("post_norm", getattr(mlp.linear_fc1, "layer_norm_weight", None))):
            if norm_weight is not None:
                fill(norm_weight, full(f"{prefix}.{kind}", (h,), norm_weight.device),
                     f"{prefix}.{kind}")
    final_norm = getattr(gpt.decoder, "final_layernorm", None)
    if final_norm is not None and getattr(final_norm, "weight", None) is not None:
        fill(final_norm.weight, full("final_norm", (h,), final_norm.weight.device), "final_norm")


def causal_attention_mask(seq_length: int, device: Any = None):
    """[1, 1, s, s] bool mask, True where attention is NOT allowed (Megatron's convention).

    Pass it explicitly: megatron's default mask (attention_mask=None) is built with device="cuda".
    """
    import torch

    mask = torch.ones(seq_length, seq_length, dtype=torch.bool, device=device).triu(diagonal=1)
    return mask.view(1, 1, seq_length, seq_length)


def position_ids(batch_size: int, seq_length: int, device: Any = None):
    """[b, s] positions 0..s-1 (what GPTModel's RoPE reads)."""
    import torch

    return torch.arange(seq_length, dtype=torch.long, device=device).unsqueeze(0).expand(
        batch_size, seq_length)
