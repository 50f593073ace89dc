"""Helpers of the conversation-data tests (a uniquely named module: several packages' test
folders are collected in one pytest run). The tokenizer is a real byte-level BPE with the ChatML
tool-call template, trained by the data stage's own code on a few paragraphs (vocab 512)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

GSM8K_LINE = 5  # a GSM8K test question planted in an SFT answer


def write_lines(path: Path, records: list) -> Path:
    """JSONL; a str item is written as the raw line (to plant malformed JSON)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in records), encoding="utf-8")
    return path


def write_array(path: Path, records: list[dict]) -> Path:
    """A pretty-printed JSON array (as LLaMA-Factory ships its demo sets): records span lines."""
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def chat_tokenizer(tmp_path_factory) -> Path:
    from data_testing import ENGLISH, prose
    from fullchain.data.tokenize_config import TokenizerConfig
    from fullchain.data.tokenizer import save_hf, train_bpe

    cfg = TokenizerConfig(vocab_size=512)
    texts = ENGLISH + [prose(seed) for seed in range(20)] + ["What is 17 * 23? The answer is 391."] * 20
    directory = tmp_path_factory.mktemp("chat_tokenizer") / "tokenizer"
    save_hf(cfg, train_bpe(cfg, texts), directory)
    return directory


def tool_conversation(question: str = "What is 17 * 23?", answer: str = "391") -> dict:
    """An OpenAI-format record with one calculator call."""
    return {"messages": [
        {"role": "user", "content": question},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "calculator",
                                              "arguments": json.dumps({"expression": "17 * 23"})}}]},
        {"role": "tool", "content": answer},
        {"role": "assistant", "content": f"The answer is {answer}."}]}
