"""Tokenizer: config rules, training, round trip on English and Chinese, specials, chat template."""
from __future__ import annotations

import random
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from fullchain.data.tokenize_config import DEFAULT_SPECIAL_TOKENS, PackConfig, TokenizerConfig

WORDS = ("the river carries sand from high mountains to a quiet sea while farmers plant rice "
         "and children read old books about stars storms ships bread lighthouses").split()
HAN = "春天来了山坡上的桃花开得正好孩子们放学以后常常跑到河边去放风筝老人坐在树下喝茶聊天城墙用青砖砌成"


def english(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def chinese(rng: random.Random, characters: int) -> str:
    return "".join(rng.choice(HAN) for _ in range(characters)) + "。"


def corpus(seed: int = 0, documents: int = 300) -> list[str]:
    rng = random.Random(seed)
    return [english(rng, 60) if i % 3 else chinese(rng, 80) for i in range(documents)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from fullchain.data.tokenizer import save_hf, train_bpe

    cfg = TokenizerConfig(vocab_size=600, min_frequency=2)
    directory = tmp_path_factory.mktemp("tok") / "tokenizer"
    info = save_hf(cfg, train_bpe(cfg, iter(corpus())), directory)
    return cfg, info


def test_config_rules():
    with pytest.raises(ValueError, match=r"^vocab_size:"):
        TokenizerConfig(vocab_size=100)
    with pytest.raises(ValueError, match=r"^eod_token:"):
        TokenizerConfig(eod_token="</s>")
    with pytest.raises(ValueError, match=r"^special_tokens:"):
        TokenizerConfig(special_tokens=["<|endoftext|>", "<|pad|>", "<|pad|>"])
    TokenizerConfig(path="/some/dir", vocab_size=1)  # a loaded tokenizer brings its own vocab
    with pytest.raises(ValueError, match=r"^split:"):
        PackConfig(split="90,10")
    with pytest.raises(ValueError, match=r"^split:"):
        PackConfig(split="0,1,1")
    with pytest.raises(ValueError, match=r"^dtype:"):
        PackConfig(dtype="int8")
    assert PackConfig(split="8, 1, 1").split_fractions() == pytest.approx((0.8, 0.1, 0.1))


def test_round_trip_english_and_chinese(trained):
    from transformers import AutoTokenizer

    _, info = trained
    hf = AutoTokenizer.from_pretrained(str(info.directory))
    samples = [
        "The quick brown fox jumps over the lazy dog, twice!  Then: 42 naps.\n\tTabs too.",
        "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。",
        "Mixed 中英文 text with emoji 🚀 and accents: café, naïve, Zürich.",
        # NFD input comes back NFC: the normaliser composes "e" + combining acute.
        "cafe\u0301 and re\u0301sume\u0301",
        " leading space and trailing space ",
    ]
    for text in samples:
        ids = hf(text, add_special_tokens=False)["input_ids"]
        assert hf.decode(ids) == unicodedata.normalize("NFC", text)
    assert info.vocab_size == len(hf) == 600


def test_digits_are_single_tokens_even_when_numbers_repeat(tmp_path):
    """A corpus full of the same numbers would merge them under plain byte-level BPE; the digit
    pre-tokenizer keeps every digit its own token, a leading space with the first (and decode
    still round-trips)."""
    from fullchain.data.tokenizer import save_hf, train_bpe
    from transformers import AutoTokenizer

    cfg = TokenizerConfig(vocab_size=400, min_frequency=2)
    texts = [f"In 2024 we sold 37 * 48 = 1776 units, then 2024 again ({i})." for i in range(200)]
    info = save_hf(cfg, train_bpe(cfg, iter(texts)), tmp_path / "tokenizer")
    hf = AutoTokenizer.from_pretrained(str(info.directory))
    text = "Sold 2024 units at 37 each, 1776 in all."
    ids = hf(text, add_special_tokens=False)["input_ids"]
    pieces = [hf.decode([i]) for i in ids]
    digits = [p for p in pieces if any(c.isdigit() for c in p)]
    assert [p.lstrip(" ") for p in digits] == list("2024" "37" "1776"), pieces
    # a space before a number stays with its first digit, right after the word before it
    assert digits[0] == " 2" and digits[4] == " 3" and pieces[pieces.index(" 2") - 1].endswith("old")
    assert hf.decode(ids) == text


def test_special_tokens_have_stable_single_ids(trained):
    from transformers import AutoTokenizer

    cfg, info = trained
    hf = AutoTokenizer.from_pretrained(str(info.directory))
    for expected_id, token in enumerate(DEFAULT_SPECIAL_TOKENS):
        assert hf(token, add_special_tokens=False)["input_ids"] == [expected_id]
    assert (info.eod_id, info.pad_id, info.bos_id) == (0, 1, None)
    assert hf.eos_token == "<|endoftext|>" and hf.pad_token == "<|pad|>"
    # The packing backend encodes special-token strings found in corpus text as plain text.
    from fullchain.data.tokenizer import load_backend

    backend = load_backend(info.backend_file)
    forged = backend.encode("a<|endoftext|>b", add_special_tokens=False).ids
    assert info.eod_id not in forged
    assert backend.decode(forged, skip_special_tokens=False) == "a<|endoftext|>b"


def test_chat_template_renders_tool_calls(trained):
    from transformers import AutoTokenizer

    _, info = trained
    hf = AutoTokenizer.from_pretrained(str(info.directory))
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                               "parameters": {"type": "object", "properties": {
                                                   "city": {"type": "string"}}}}}]
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "天气如何？"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function",
                         "function": {"name": "get_weather", "arguments": {"city": "北京"}}}]},
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "assistant", "content": "It is 21 degrees."},
    ]
    text = hf.apply_chat_template(messages, tools=tools, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are helpful.\n\n# Tools")
    assert '"name": "get_weather"' in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>' in text
    assert "<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response><|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\nIt is 21 degrees.<|im_end|>\n")

    plain = hf.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert plain == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # {% generation %} marks exactly the assistant turns (content, tool call, <|im_end|>).
    encoded = hf.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True,
                                     return_assistant_tokens_mask=True)
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    trained = hf.decode([i for i, m in zip(ids, mask) if m])
    assert trained == ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n'
                       "</tool_call><|im_end|>It is 21 degrees.<|im_end|>")

    ids = hf.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert ids[0] == hf.convert_tokens_to_ids("<|im_start|>") == 2
    assert hf.convert_tokens_to_ids("<|im_end|>") in ids


def test_training_is_deterministic_across_processes(tmp_path, trained):
    """A second training in a fresh process (new hash seeds, new thread pool) gives the same file."""
    _, info = trained
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from test_tokenizer import corpus\n"
        "from fullchain.data.tokenize_config import TokenizerConfig\n"
        "from fullchain.data.tokenizer import save_hf, train_bpe\n"
        "cfg = TokenizerConfig(vocab_size=600, min_frequency=2)\n"
        "save_hf(cfg, train_bpe(cfg, iter(corpus())), Path(sys.argv[1]))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "again"),
                    str(Path(__file__).parent)], check=True)
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == info.backend_file.read_bytes()


def test_pretrained_path_is_copied(tmp_path, trained):
    from fullchain.data.tokenizer import copy_pretrained

    _, info = trained
    cfg = TokenizerConfig(path=str(info.directory))
    copied = copy_pretrained(cfg, tmp_path / "tokenizer")
    assert (copied.vocab_size, copied.eod_id, copied.pad_id) == (info.vocab_size, 0, 1)
    with pytest.raises(FileNotFoundError, match="tokenizer.path"):
        copy_pretrained(TokenizerConfig(path=str(tmp_path / "missing")), tmp_path / "x")
