"""A HF Llama export to GGUF with llama.cpp's own converter (`convert_hf_to_gguf.py` of a llama.cpp
source tree, e.g. the llama-cpp-python sdist's vendor/llama.cpp, with its gguf-py), run in the main
environment (the converter needs torch and transformers).

Two things stop that converter on our exports, and both are settled here before its `main()` runs:

- It asks sentencepiece first (`import sentencepiece` before it looks for a `tokenizer.model`);
  our tokenizers are HF `tokenizer.json` byte-level BPE with no sentencepiece file, so the
  missing file is reported as missing (FileNotFoundError), which sends the converter on to its
  GPT-2-style BPE path, as it does for a model without `tokenizer.model` when sentencepiece is
  installed.
- It recognises a BPE pre-tokenizer by hashing the ids of a probe text, from a list of
  published models; a tokenizer trained by the data stage is never on it. Ours pre-tokenize with
  `ByteLevel(use_regex=True)`, which is GPT-2's split, so an unrecognised hash with exactly that
  pre-tokenizer becomes llama.cpp's `gpt-2` pre-tokenizer; anything else is still refused.
  Whether the GGUF then tokenizes as HF does is checked on sample texts
  (benchmarks/deploy_engines.py --tokenizer-check), not assumed.

    python -m fullchain.deploy.gguf --llama-cpp DIR MODEL_DIR --outfile X.gguf --outtype q8_0
"""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path


def gpt2_byte_level(model_dir: Path) -> bool:
    """Whether tokenizer.json pre-tokenizes exactly as GPT-2 (one ByteLevel with its regex)."""
    doc = json.loads((Path(model_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    pre = doc.get("pre_tokenizer") or {}
    return (pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
            and not pre.get("add_prefix_space", False) and doc.get("normalizer") is None)


def _patch(source: Path) -> None:
    sys.path[:0] = [str(source), str(source / "gguf-py")]
    from conversion import base  # llama.cpp's converter package, from `source`

    create = base.TextModel._create_vocab_sentencepiece

    def create_vocab_sentencepiece(self):
        if not (self.dir_model / "tokenizer.model").is_file():
            raise FileNotFoundError(f"{self.dir_model / 'tokenizer.model'}: no sentencepiece model")
        return create(self)

    vocab_pre = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return vocab_pre(self, tokenizer)
        except NotImplementedError:
            if gpt2_byte_level(self.dir_model):
                base.logger.info("tokenizer.ggml.pre: 'gpt-2' (ByteLevel pre-tokenizer with GPT-2's "
                                 "regex, trained here: its hash is on no list)")
                return "gpt-2"
            raise

    base.TextModel._create_vocab_sentencepiece = create_vocab_sentencepiece
    base.TextModel.get_vocab_base_pre = get_vocab_base_pre


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] != "--llama-cpp":
        raise SystemExit("usage: python -m fullchain.deploy.gguf --llama-cpp DIR "
                         "<convert_hf_to_gguf.py arguments>")
    source = Path(argv[1])
    script = source / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise SystemExit(f"--llama-cpp {source}: no convert_hf_to_gguf.py there (a llama.cpp "
                         "source tree, e.g. the llama-cpp-python sdist's vendor/llama.cpp)")
    _patch(source)
    sys.argv = [str(script), *argv[2:]]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
