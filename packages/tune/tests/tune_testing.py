"""Shared fixtures of the tune tests: a tiny HF Llama with the data stage's tokenizer (its BPE
trainer, special tokens and ChatML + tool-call template), and conversation sets written with
core's `write_conversations` from LLaMA-Factory's demo files in ../shared/data (converted by the
small readers below until the chat_data node provides them)."""
import json
import os
from pathlib import Path

import pytest
from fullchain.core.config import to_dataclass
from fullchain.core.contracts import write_conversations
from fullchain.tune.config import TuneConfig

SHARED_DATA = Path(os.environ.get("FULLCHAIN_SHARED_DATA",
                                  Path(__file__).resolve().parents[3] / ".." / "shared" / "data"))
SFT_DEMO = SHARED_DATA / "llamafactory-sft-demo" / "alpaca_en_demo.json"
DPO_DEMO = SHARED_DATA / "llamafactory-dpo-demo" / "dpo_en_demo.json"
TOOL_DEMO = SHARED_DATA / "llamafactory-toolcall-demo" / "glaive_toolcall_en_demo.json"

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
TOOL_CONVERSATION = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function",
                         "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": '{"temp_c": 20}'},
        {"role": "assistant", "content": "It is 20 C in Paris."},
    ],
    "tools": [WEATHER_TOOL],
}


def alpaca_conversation(record: dict) -> dict:
    question = record["instruction"] + (f"\n\n{record['input']}" if record["input"] else "")
    return {"messages": [{"role": "user", "content": question},
                         {"role": "assistant", "content": record["output"]}]}


def sharegpt_pair(record: dict) -> dict:
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    return {"prompt": [{"role": roles[m["from"]], "content": m["value"]} for m in record["conversations"]],
            "chosen": [{"role": "assistant", "content": record["chosen"]["value"]}],
            "rejected": [{"role": "assistant", "content": record["rejected"]["value"]}]}


def build_tokenizer(directory: Path, special_tokens=None) -> Path:
    """The data stage's tokenizer recipe (byte-level BPE, special tokens first, ChatML + tools
    template) trained on a slice of the SFT demo."""
    from fullchain.data.tokenize_config import TokenizerConfig
    from fullchain.data.tokenizer import save_hf, train_bpe

    fields = {"vocab_size": 512}
    if special_tokens is not None:
        fields.update(special_tokens=special_tokens, eod_token=special_tokens[0],
                      pad_token=special_tokens[1])
    cfg = TokenizerConfig(**fields)
    texts = [r["instruction"] + " " + r["output"] for r in json.loads(SFT_DEMO.read_text())[:300]]
    save_hf(cfg, train_bpe(cfg, texts), directory)
    return directory


def build_model(directory: Path, tokenizer_dir: Path, architecture: str = "LlamaForCausalLM",
                seed: int = 0) -> Path:
    """A tiny random Llama (2 layers, hidden 32, GQA 4/2) saved as an hf_model directory."""
    import shutil

    import torch
    import transformers
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=88,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(config)
    model.save_pretrained(str(directory), safe_serialization=True)
    GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id).save_pretrained(str(directory))
    for item in Path(tokenizer_dir).iterdir():
        shutil.copy2(item, directory / item.name)
    return directory


@pytest.fixture(scope="session")
def tune_tokenizer(tmp_path_factory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("tune_tokenizer"))


@pytest.fixture(scope="session")
def tune_base_model(tune_tokenizer, tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("tune_base"), tune_tokenizer)


@pytest.fixture(scope="session")
def sft_set(tmp_path_factory) -> Path:
    """64 + 8 alpaca conversations and the tool-call example, as a conversation set."""
    records = json.loads(SFT_DEMO.read_text())
    out = tmp_path_factory.mktemp("sft_set")
    write_conversations(out, "messages", {
        "train": [alpaca_conversation(r) for r in records[:64]] + [TOOL_CONVERSATION],
        "valid": [alpaca_conversation(r) for r in records[990:998]]})
    return out


@pytest.fixture(scope="session")
def dpo_set(tmp_path_factory) -> Path:
    records = json.loads(DPO_DEMO.read_text())
    out = tmp_path_factory.mktemp("dpo_set")
    write_conversations(out, "preference", {"train": [sharegpt_pair(r) for r in records[:16]]})
    return out


def tune_config(**fields) -> TuneConfig:
    """A tiny, fast TuneConfig (seq 128, micro 4, global 8, 4 steps); `fields` override."""
    base = {"batch": {"seq_length": 128, "micro_batch_size": 4, "global_batch_size": 8},
            "optimizer": {"lr": 3e-3}, "schedule": {"train_iters": 4, "warmup_iters": 1, "min_lr": 0.0},
            "checkpoint": {"save_interval": 0}, "logging": {"log_interval": 1, "tensorboard": False}}
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return to_dataclass(TuneConfig, base, "tune")


def metrics_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
