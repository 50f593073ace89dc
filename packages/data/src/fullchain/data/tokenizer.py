"""Train (or load) the tokenizer and save it in Hugging Face format inside the artifact.

A trained tokenizer is GPT-2 style byte-level BPE (every string encodes, nothing is ever
<unk>) behind an NFC normaliser, with every digit its own pre-token (numbers are read and
written one digit at a time, as in Llama and Qwen: a small model copies and computes with
digits far more easily than with merged digit runs), with the special tokens added first so that their ids are
0..n-1 whatever the corpus: the end-of-document id the packed data is written with is fixed
by the config alone.

The saved directory is what `AutoTokenizer.from_pretrained(dir)` reads offline; its
`tokenizer.json` is also what the packing workers load directly with `tokenizers` (the fast
path that skips the transformers wrapper).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fullchain.data.tokenize_config import TokenizerConfig

log = logging.getLogger(__name__)

TOKENIZER_JSON = "tokenizer.json"


@dataclass(frozen=True)
class TokenizerInfo:
    """What the packer and `dataset.json` need to know about a saved tokenizer."""

    directory: Path
    """The saved Hugging Face tokenizer directory."""
    vocab_size: int
    """len(tokenizer): every id the tokenizer can produce, special tokens included."""
    eod_id: int
    """Id appended after every document."""
    pad_id: int
    """Padding id (the EOD id when the tokenizer has no pad token)."""
    bos_id: int | None
    """Beginning-of-sequence id, None when the tokenizer has none."""

    @property
    def backend_file(self) -> Path:
        """The `tokenizers` JSON file the packing workers load."""
        return self.directory / TOKENIZER_JSON


def train_bpe(cfg: TokenizerConfig, texts: Iterable[str]):
    """A byte-level BPE `tokenizers.Tokenizer` trained on `texts` (consumed once, streamed)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    # Digits first, one by one, a space before a digit kept with it: "add 94" is "add", " 9", "4",
    # so no merge ever joins two digits, and a number's first token is " 9" right after the word
    # before it (with a lone " " between them, a small model needs one more layer to see which
    # word a number follows). Then the GPT-2 byte-level split; add_prefix_space=False: a
    # document's first word is encoded as written, so that decode(encode(x)) == NFC(x) holds.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r" ?\d"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=list(cfg.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_hf(cfg: TokenizerConfig, tokenizer, directory: Path) -> TokenizerInfo:
    """Save a trained `tokenizers.Tokenizer` as a Hugging Face tokenizer directory."""
    from transformers import PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=cfg.eod_token,
        pad_token=cfg.pad_token,
        bos_token=cfg.bos_token,
        chat_template=cfg.chat_template,
        model_max_length=cfg.model_max_length,
        clean_up_tokenization_spaces=False,
    )
    hf.save_pretrained(str(directory))
    return describe(directory)


def copy_pretrained(cfg: TokenizerConfig, directory: Path) -> TokenizerInfo:
    """Copy the existing tokenizer at `cfg.path` into `directory` (Hugging Face format).

    Its own special tokens and chat template win; the config's are used only where the
    tokenizer has none (a tokenizer without a chat template gets `cfg.chat_template`)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    source = Path(cfg.path)
    if not (source / TOKENIZER_JSON).is_file():
        raise FileNotFoundError(
            f"tokenizer.path: {source} has no {TOKENIZER_JSON}; a fast (tokenizers-backed) "
            "Hugging Face tokenizer directory is needed"
        )
    hf = AutoTokenizer.from_pretrained(str(source))
    if not isinstance(hf, PreTrainedTokenizerFast):
        raise ValueError(f"tokenizer.path: {source} did not load as a fast tokenizer ({type(hf)})")
    if hf.eos_token is None:
        if hf.convert_tokens_to_ids(cfg.eod_token) in (None, hf.unk_token_id):
            raise ValueError(
                f"tokenizer.path: {source} has no eos_token and eod_token={cfg.eod_token!r} "
                "is not in its vocabulary"
            )
        hf.eos_token = cfg.eod_token
    if not getattr(hf, "chat_template", None):
        hf.chat_template = cfg.chat_template
    directory.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(directory))
    return describe(directory)


def describe(directory: Path) -> TokenizerInfo:
    """Read vocabulary size and special ids back from a saved tokenizer directory.

    Reading back (rather than trusting what was passed to the saver) makes `dataset.json`
    describe exactly what `AutoTokenizer.from_pretrained(directory)` will give downstream."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(directory))
    eod_id = hf.eos_token_id
    if eod_id is None:
        raise ValueError(f"{directory}: the saved tokenizer has no eos_token (needed as EOD)")
    pad_id = hf.pad_token_id if hf.pad_token_id is not None else eod_id
    return TokenizerInfo(
        directory=directory,
        vocab_size=len(hf),
        eod_id=int(eod_id),
        pad_id=int(pad_id),
        bos_id=None if hf.bos_token_id is None else int(hf.bos_token_id),
    )


def load_backend(path: Path | str):
    """The raw `tokenizers.Tokenizer` for packing: special-token strings that occur in the
    corpus text are encoded as plain text, so a document cannot forge an EOD or a chat turn."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.encode_special_tokens = True
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def fertility(tokens: int, characters: int) -> float | None:
    """Tokens per character, None without text."""
    return tokens / characters if characters else None


def summary(info: TokenizerInfo) -> dict[str, Any]:
    """The tokenizer fields of `dataset.json`."""
    return {
        "tokenizer": "tokenizer",
        "vocab_size": info.vocab_size,
        "eod_id": info.eod_id,
        "pad_id": info.pad_id,
        "bos_id": info.bos_id,
    }
