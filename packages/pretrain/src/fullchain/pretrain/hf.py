"""Megatron GPTModel <-> Hugging Face `LlamaForCausalLM` (safetensors), and the CLI behind it.

    python -m fullchain.pretrain.hf export --checkpoint CKPT_DIR --model-config model.json \\
        [--vocab-size N] [--seq-length S] --tokenizer TOKENIZER_DIR --out HF_DIR
    python -m fullchain.pretrain.hf import --hf HF_DIR [--model-config model.json] --out CKPT_DIR

Both run in one process (a TP=1, PP=1 world). Export loads the model part of a megatron dist
checkpoint saved at ANY TP/PP (dist_checkpointing reshards on load); import writes a dist
checkpoint holding only {"model": ...}, which training loads at any TP/PP.

Name and layout mapping (megatron -> HF, per layer i):
    linear_qkv   [groups x (q_per_group*d | d | d), h] -> q_proj, k_proj, v_proj
    linear_fc1   [gate; up]                           -> gate_proj, up_proj
    linear_proj -> o_proj, linear_fc2 -> down_proj, input/pre_mlp norms -> input/post_attention
Megatron's RoPE (non-interleaved) is HF Llama's rotate_half convention, so logits match.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from fullchain.pretrain.model_config import ModelConfig

logger = logging.getLogger(__name__)


# -- config ------------------------------------------------------------------------------------

def read_model_config(path: str | Path) -> tuple[ModelConfig, dict]:
    """A ModelConfig from model.json (extra keys such as "padded_vocab_size" are returned apart)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the model config ({error})") from error
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    extra = {k: v for k, v in data.items() if k not in names}
    try:
        return ModelConfig(**{k: v for k, v in data.items() if k in names}), extra
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error


def llama_config(model: ModelConfig, vocab_size: int, tokenizer: Any = None, dtype: str = "float32"):
    """The transformers LlamaConfig of this shape (vocab_size = the padded embedding rows)."""
    from transformers import LlamaConfig

    special = {}
    if tokenizer is not None:
        special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id}
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=model.hidden_size,
        intermediate_size=model.ffn_hidden_size,
        num_hidden_layers=model.num_layers,
        num_attention_heads=model.num_attention_heads,
        num_key_value_heads=model.query_groups,
        head_dim=model.head_dim,
        hidden_act="silu",
        max_position_embeddings=model.max_position_embeddings,
        initializer_range=model.init_method_std,
        rms_norm_eps=model.norm_epsilon,
        rope_parameters={"rope_type": "default", "rope_theta": float(model.rotary_base)},
        tie_word_embeddings=model.tie_word_embeddings,
        attention_bias=False,
        mlp_bias=False,
        dtype=dtype,
        **special,
    )


def model_config_from_hf(hf_config: Any, name: str = "hf") -> ModelConfig:
    """A ModelConfig for a HF Llama config (for `import` without --model-config)."""
    rope = getattr(hf_config, "rope_parameters", None) or {}
    head_dim = getattr(hf_config, "head_dim", None) or (
        hf_config.hidden_size // hf_config.num_attention_heads)
    if head_dim * hf_config.num_attention_heads != hf_config.hidden_size:
        raise ValueError(f"head_dim: {head_dim} x heads != hidden_size (not supported by megatron's "
                         "GPTModel mapping here)")
    return ModelConfig(
        name=name, num_layers=hf_config.num_hidden_layers, hidden_size=hf_config.hidden_size,
        num_attention_heads=hf_config.num_attention_heads,
        num_query_groups=hf_config.num_key_value_heads,
        ffn_hidden_size=hf_config.intermediate_size, vocab_size=hf_config.vocab_size,
        max_position_embeddings=hf_config.max_position_embeddings,
        rotary_base=float(rope.get("rope_theta", 10000.0)), norm_epsilon=hf_config.rms_norm_eps,
        tie_word_embeddings=bool(hf_config.tie_word_embeddings),
        init_method_std=hf_config.initializer_range)


# -- tensors -----------------------------------------------------------------------------------

def megatron_to_hf_state(state: dict, model: ModelConfig) -> dict:
    """HF Llama tensors from a full (TP=1, PP=1) megatron GPTModel state_dict."""
    groups, d = model.query_groups, model.head_dim
    q_per_group = model.num_attention_heads // groups
    h, ffn = model.hidden_size, model.ffn_hidden_size

    def get(key: str):
        if key not in state or state[key] is None:
            raise KeyError(f"{key}: missing from the megatron state dict")
        return state[key].detach()

    out = {"model.embed_tokens.weight": get("embedding.word_embeddings.weight"),
           "model.norm.weight": get("decoder.final_layernorm.weight")}
    if not model.tie_word_embeddings:
        out["lm_head.weight"] = get("output_layer.weight")
    for i in range(model.num_layers):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
        qkv = get(src + "self_attention.linear_qkv.weight").reshape(groups, q_per_group + 2, d, h)
        out[dst + "self_attn.q_proj.weight"] = qkv[:, :q_per_group].reshape(-1, h)
        out[dst + "self_attn.k_proj.weight"] = qkv[:, q_per_group].reshape(-1, h)
        out[dst + "self_attn.v_proj.weight"] = qkv[:, q_per_group + 1].reshape(-1, h)
        out[dst + "self_attn.o_proj.weight"] = get(src + "self_attention.linear_proj.weight")
        fc1 = get(src + "mlp.linear_fc1.weight")
        out[dst + "mlp.gate_proj.weight"], out[dst + "mlp.up_proj.weight"] = fc1[:ffn], fc1[ffn:]
        out[dst + "mlp.down_proj.weight"] = get(src + "mlp.linear_fc2.weight")
        norm = src + "input_layernorm.weight"
        if norm not in state:  # TransformerEngine spec: the norm is fused into linear_qkv
            norm = src + "self_attention.linear_qkv.layer_norm_weight"
        out[dst + "input_layernorm.weight"] = get(norm)
        norm = src + "pre_mlp_layernorm.weight"
        if norm not in state:
            norm = src + "mlp.linear_fc1.layer_norm_weight"
        out[dst + "post_attention_layernorm.weight"] = get(norm)
    return {k: v.contiguous() for k, v in out.items()}


def _hf_full_tensor(hf: dict, model: ModelConfig, vocab_rows: int):
    """A `fill_from_full` provider reading HF Llama tensors (any dtype) into megatron's layout."""
    import torch

    groups, d = model.query_groups, model.head_dim
    q_per_group = model.num_attention_heads // groups
    h = model.hidden_size

    def get(key: str):
        if key not in hf:
            raise KeyError(f"{key}: missing from the Hugging Face checkpoint")
        return hf[key]

    def vocab(tensor, key: str):
        if tensor.shape[0] > vocab_rows:
            raise ValueError(
                f"vocab_size: {key} has {tensor.shape[0]} rows, more than the model's "
                f"{vocab_rows}; set model.vocab_size >= {tensor.shape[0]}")
        if tensor.shape[0] < vocab_rows:
            # Padding rows never see a real token id; zeros keep their logits at 0.
            tensor = torch.cat([tensor, tensor.new_zeros(vocab_rows - tensor.shape[0], h)])
        return tensor

    def full(name: str, shape: tuple, device: Any):
        if name == "embedding":
            value = vocab(get("model.embed_tokens.weight"), "model.embed_tokens.weight")
        elif name == "output_layer":
            key = "lm_head.weight" if "lm_head.weight" in hf else "model.embed_tokens.weight"
            value = vocab(hf[key], key)
        elif name == "final_norm":
            value = get("model.norm.weight")
        else:
            _, index, kind = name.split(".")
            p = f"model.layers.{index}."
            if kind == "qkv":
                q = get(p + "self_attn.q_proj.weight").reshape(groups, q_per_group, d, h)
                k = get(p + "self_attn.k_proj.weight").reshape(groups, 1, d, h)
                v = get(p + "self_attn.v_proj.weight").reshape(groups, 1, d, h)
                value = torch.cat([q, k, v], dim=1).reshape(-1, h)
            else:
                value = get(p + {"proj": "self_attn.o_proj.weight",
                                 "gate": "mlp.gate_proj.weight", "up": "mlp.up_proj.weight",
                                 "fc2": "mlp.down_proj.weight",
                                 "input_norm": "input_layernorm.weight",
                                 "post_norm": "post_attention_layernorm.weight"}[kind])
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"{name}: the Hugging Face tensor has shape {tuple(value.shape)}, "
                             f"the model config expects {tuple(shape)}")
        return value.to(device=device, dtype=torch.float32)

    return full


def read_hf_tensors(hf_dir: str | Path) -> dict:
    """All tensors of a HF safetensors checkpoint directory (sharded or not), on the CPU."""
    from safetensors.torch import load_file

    hf_dir = Path(hf_dir)
    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{hf_dir}: no *.safetensors files (a Llama safetensors checkpoint)")
    tensors: dict = {}
    for file in files:
        tensors.update(load_file(str(file), device="cpu"))
    return tensors


# -- the two directions ------------------------------------------------------------------------

def full_state_dict(gpt: Any) -> dict:
    """The model's state dict (TP=1, PP=1: the whole model) without megatron's extra state."""
    from megatron.core import parallel_state

    if (parallel_state.get_tensor_model_parallel_world_size() != 1
            or parallel_state.get_pipeline_model_parallel_world_size() != 1):
        raise ValueError("tensor_parallel_size: export needs the whole model in one process "
                         "(TP=1, PP=1); load the checkpoint there, dist_checkpointing reshards")
    return {k: v for k, v in gpt.state_dict().items() if "_extra_state" not in k and v is not None}


def export_hf(model: Any, model_cfg: ModelConfig, out_dir: str | Path,
              tokenizer_dir: str | Path | None) -> Path:
    """Write `model` (a TP=1, PP=1 GPTModel) as a HF LlamaForCausalLM safetensors checkpoint.

    out_dir gets config.json, generation_config.json, model*.safetensors and, when
    tokenizer_dir is given, the tokenizer's files (the data stage's tokenizer).
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = megatron_to_hf_state(full_state_dict(model), model_cfg)
    vocab_rows = tensors["model.embed_tokens.weight"].shape[0]
    dtype = tensors["model.embed_tokens.weight"].dtype
    tokenizer = None
    if tokenizer_dir is not None:
        tokenizer_dir = Path(tokenizer_dir)
        if not tokenizer_dir.is_dir():
            raise FileNotFoundError(f"{tokenizer_dir}: tokenizer directory not found")
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        if len(tokenizer) > vocab_rows:
            raise ValueError(f"vocab_size: the tokenizer has {len(tokenizer)} tokens, the model "
                             f"only {vocab_rows} embedding rows")
    config = llama_config(model_cfg, vocab_rows, tokenizer,
                          dtype="bfloat16" if dtype == torch.bfloat16 else "float32")
    with torch.device("meta"):
        hf_model = LlamaForCausalLM(config)
    hf_model.load_state_dict(tensors, strict=not model_cfg.tie_word_embeddings, assign=True)
    if model_cfg.tie_word_embeddings:
        hf_model.tie_weights()
    hf_model.save_pretrained(str(out_dir), safe_serialization=True)
    GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                     pad_token_id=config.pad_token_id).save_pretrained(str(out_dir))
    if tokenizer_dir is not None:
        for item in tokenizer_dir.iterdir():
            if item.is_file():
                shutil.copy2(item, out_dir / item.name)
    logger.info("exported %s (%d tensors) to %s", model_cfg.name, len(tensors), out_dir)
    return out_dir


def load_hf_into(model: Any, hf_dir: str | Path, model_cfg: ModelConfig | None = None) -> None:
    """Load a HF Llama checkpoint into this rank's GPTModel chunk, at any TP/PP layout.

    `model_cfg` defaults to the shape read from hf_dir/config.json; shapes are checked tensor by
    tensor (ValueError naming the tensor). Embedding rows beyond the HF vocabulary (padding) are
    zero.
    """
    from fullchain.pretrain.model import fill_from_full
    from megatron.core import parallel_state
    from transformers import AutoConfig

    if model_cfg is None:
        model_cfg = model_config_from_hf(AutoConfig.from_pretrained(str(hf_dir)))
    tensors = read_hf_tensors(hf_dir)
    tp = parallel_state.get_tensor_model_parallel_world_size()
    if getattr(model, "pre_process", False):
        rows = model.embedding.word_embeddings.weight.shape[0] * tp
    else:
        rows = model.output_layer.weight.shape[0] * tp
    fill_from_full(model, model_cfg, _hf_full_tensor(tensors, model_cfg, rows))


# -- CLI ---------------------------------------------------------------------------------------

def resolve_checkpoint_dir(path: str | Path) -> Path:
    """An iteration directory: `path` itself, or the one `path/latest.json` names."""
    path = Path(path)
    latest = path / "latest.json"
    if latest.is_file():
        try:
            return path / json.loads(latest.read_text())["path"]
        except (json.JSONDecodeError, KeyError) as error:
            raise ValueError(f"{latest}: expected {{\"iteration\": N, \"path\": \"iter_...\"}}") \
                from error
    if not (path / "metadata.json").is_file():
        raise FileNotFoundError(f"{path}: not a dist checkpoint (no metadata.json, no latest.json)")
    return path


def _export(args: argparse.Namespace) -> None:
    import torch
    from fullchain.pretrain import distributed
    from fullchain.pretrain.config import ParallelConfig
    from fullchain.pretrain.model import build_gpt_model
    from megatron.core import dist_checkpointing

    model_cfg, extra = read_model_config(args.model_config)
    vocab_size = args.vocab_size or extra.get("padded_vocab_size")
    if not vocab_size:
        raise ValueError(f"vocab_size: give --vocab-size or a padded_vocab_size in {args.model_config}")
    checkpoint = resolve_checkpoint_dir(args.checkpoint)
    parallel = ParallelConfig()
    distributed.initialize(parallel, seed=0)
    try:
        gpt = build_gpt_model(model_cfg, parallel, int(vocab_size),
                              args.seq_length or model_cfg.max_position_embeddings,
                              precision=args.precision)
        with torch.no_grad():
            loaded = dist_checkpointing.load({"model": gpt.sharded_state_dict()}, str(checkpoint))
        gpt.load_state_dict(loaded["model"])
        export_hf(gpt, model_cfg, args.out, args.tokenizer)
    finally:
        distributed.destroy()


def _import(args: argparse.Namespace) -> None:
    from fullchain.pretrain import distributed
    from fullchain.pretrain.config import ParallelConfig
    from fullchain.pretrain.model import build_gpt_model, padded_vocab_size
    from megatron.core import dist_checkpointing
    from transformers import AutoConfig

    hf_config = AutoConfig.from_pretrained(str(args.hf))
    if args.model_config:
        model_cfg, extra = read_model_config(args.model_config)
    else:
        model_cfg, extra = model_config_from_hf(hf_config, name=Path(args.hf).name), {}
    vocab_size = extra.get("padded_vocab_size") or padded_vocab_size(
        hf_config.vocab_size, model_cfg, 1)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: the output checkpoint directory is not empty")
    out.mkdir(parents=True, exist_ok=True)
    parallel = ParallelConfig()
    distributed.initialize(parallel, seed=0)
    try:
        gpt = build_gpt_model(model_cfg, parallel, int(vocab_size),
                              model_cfg.max_position_embeddings, precision=args.precision)
        load_hf_into(gpt, args.hf, model_cfg)
        dist_checkpointing.save({"model": gpt.sharded_state_dict()}, str(out))
    finally:
        distributed.destroy()
    logger.info("imported %s into %s (padded vocab %d)", args.hf, out, vocab_size)


def main(argv: list[str] | None = None) -> None:
    """`python -m fullchain.pretrain.hf export|import ...`"""
    parser = argparse.ArgumentParser(prog="python -m fullchain.pretrain.hf",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="megatron dist checkpoint -> HF Llama")
    export.add_argument("--checkpoint", required=True,
                        help="an iter_* dist checkpoint dir, or a dir with latest.json")
    export.add_argument("--model-config", required=True, help="model.json (a ModelConfig)")
    export.add_argument("--vocab-size", type=int, default=None,
                        help="padded vocabulary size (default: model.json's padded_vocab_size)")
    export.add_argument("--seq-length", type=int, default=None, help="training sequence length")
    export.add_argument("--tokenizer", default=None, help="HF tokenizer dir copied into --out")
    export.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    export.add_argument("--out", required=True, help="HF checkpoint directory to write")
    imp = commands.add_parser("import", help="HF Llama -> megatron dist checkpoint {'model'}")
    imp.add_argument("--hf", required=True, help="HF Llama safetensors checkpoint directory")
    imp.add_argument("--model-config", default=None,
                     help="model.json (default: the shape of the HF config)")
    imp.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    imp.add_argument("--out", required=True, help="dist checkpoint directory to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    {"export": _export, "import": _import}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
