"""Held-out perplexity and bits per byte on the data stage's validation split (eval env).

The packed corpus holds the validation split as Megatron .bin/.idx token ids; the text comes back
by decoding them with the corpus' own tokenizer (byte-level BPE: lossless). Each model then
tokenizes that text with ITS tokenizer and is scored on every token after an end-of-document
token (what pretraining put before each document), so

    perplexity    = exp(total NLL / tokens of that model)
    bits per byte = total NLL / ln 2 / UTF-8 bytes of the text

and bits per byte compares models whose tokenizers differ. Documents longer than the model's
window are scored in consecutive windows (each restarting after the end-of-document token).
"""
from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
from fullchain.core.contracts import PackedCorpus

_INDEX_HEADER = b"MMIDIDX\x00\x00"
# Megatron's DType codes (megatron/core/datasets/indexed_dataset.py)
_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64,
           7: np.float32, 8: np.uint16}


def read_indexed_documents(prefix: str) -> list[np.ndarray]:
    """The sequences of a Megatron indexed dataset (`prefix`.idx/.bin), one array each."""
    idx, binary = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
    with open(idx, "rb") as stream:
        if stream.read(9) != _INDEX_HEADER:
            raise ValueError(f"{idx}: not a Megatron index (bad header)")
        version, = struct.unpack("<Q", stream.read(8))
        if version != 1:
            raise ValueError(f"{idx}: index version {version}, expected 1")
        code, = struct.unpack("<B", stream.read(1))
        if code not in _DTYPES:
            raise ValueError(f"{idx}: unknown dtype code {code}")
        count, _documents = struct.unpack("<QQ", stream.read(16))
        offset = stream.tell()
    index = np.memmap(idx, mode="r")
    lengths = np.frombuffer(index, dtype=np.int32, count=count, offset=offset)
    pointers = np.frombuffer(index, dtype=np.int64, count=count, offset=offset + lengths.nbytes)
    data = np.memmap(binary, mode="r", dtype=np.uint8)
    dtype = _DTYPES[code]
    return [np.frombuffer(data, dtype=dtype, count=int(n), offset=int(p)).copy()
            for n, p in zip(lengths, pointers)]


def validation_texts(corpus: PackedCorpus, max_tokens: int | None, tokenizer) -> list[str]:
    """The validation split's documents as text (the first `max_tokens` corpus tokens' worth)."""
    split = corpus.splits.get("valid")
    if split is None:
        raise ValueError(f"{corpus.path / 'dataset.json'}: the corpus has no 'valid' split to "
                         "score held-out perplexity on (data.splits)")
    texts, used = [], 0
    for prefix in split.prefixes:
        for doc in read_indexed_documents(prefix):
            ids = [int(t) for t in doc if int(t) != corpus.eod_id]
            if max_tokens is not None:
                ids = ids[:max_tokens - used]
            if ids:
                texts.append(tokenizer.decode(ids))
                used += len(ids)
            if max_tokens is not None and used >= max_tokens:
                return texts
    return texts


def score_texts(model_dir: str, texts: list[str], window: int) -> dict[str, float]:
    """{perplexity, bits_per_byte, tokens, bytes} of a causal LM on `texts`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    start = tokenizer.eos_token_id if tokenizer.bos_token_id is None else tokenizer.bos_token_id
    window = min(window, int(getattr(model.config, "max_position_embeddings", window) or window))
    nll, tokens, num_bytes = 0.0, 0, 0
    with torch.inference_mode():
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            num_bytes += len(text.encode("utf-8"))
            for begin in range(0, len(ids), window - 1):
                chunk = [start, *ids[begin:begin + window - 1]]
                inputs = torch.tensor([chunk])
                logits = model(inputs).logits[0, :-1].float()
                loss = torch.nn.functional.cross_entropy(logits, inputs[0, 1:], reduction="sum")
                nll += float(loss)
                tokens += len(chunk) - 1
    if tokens == 0:
        raise ValueError("held-out perplexity: the validation split decoded to no tokens")
    return {"perplexity": math.exp(nll / tokens), "bits_per_byte": nll / math.log(2) / num_bytes,
            "tokens": tokens, "bytes": num_bytes}
