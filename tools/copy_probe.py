"""Can a model copy? The induction probe behind docs/tune.md's "Copying strings is not what is missing".

For each HF model directory: sequences of random tokens, each shown twice in a row; the score is
how often the greedy next token in the second half is the one that followed the same token in the
first half (the classic induction-head test). Two alphabets: the tokenizer's digit tokens ("0"-"9"
and " 0"-" 9", what the tool-use task copies; chance ~1/20) and 3,900 ordinary vocabulary tokens
(chance ~0). A model that copies scores near 1.0 on both.

    .venv/bin/python tools/copy_probe.py <hf dir> [<hf dir> ...] [--length 30] [--rows 32]
"""
from __future__ import annotations

import argparse


def copy_accuracy(model, alphabet, length: int, rows: int, seed: int = 0) -> float:
    import torch

    generator = torch.Generator().manual_seed(seed)
    first = alphabet[torch.randint(0, len(alphabet), (rows, length), generator=generator)]
    ids = torch.cat([first, first], 1)
    with torch.no_grad():
        predicted = model(ids).logits[:, length:-1].argmax(-1)
    return float((predicted == ids[:, length + 1:]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--length", type=int, default=30, help="tokens before the repeat")
    parser.add_argument("--rows", type=int, default=32)
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for path in args.models:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        digits = sorted(set(tokenizer(" 0 1 2 3 4 5 6 7 8 9")["input_ids"] + tokenizer("0123456789")["input_ids"]))
        ordinary = torch.arange(100, min(4000, model.config.vocab_size))
        print(f"{path}: copy accuracy, digit strings {copy_accuracy(model, torch.tensor(digits), args.length, args.rows):.2f} "
              f"(chance {1 / len(digits):.2f}); ordinary tokens "
              f"{copy_accuracy(model, ordinary, args.length, args.rows):.2f}", flush=True)


if __name__ == "__main__":
    main()
