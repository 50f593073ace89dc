"""SFT step time of the tune stage's loss (output layer at labelled positions only) against the
model's own loss (transformers' causal-LM loss, the output layer at every position: what the
Trainer does by default), same model, same batches, same process.

Data: the demo's tool-use conversations (`fullchain.data.chat.tool_use`, the `chat_data=tiny`
recipe: 90% stop after their first call, 5% carry the tool schema), tokenized with a byte-level
BPE of the data stage's recipe (4,096 tokens, digits one by one) trained, as in the demo, on the
Python standard library's sources (the embedded corpus, first 4 MB), packed into
rows of 576 tokens, micro-batch 2: the demo's tune batch. Model: the demo's `tiny` shape (hidden
128, 2 layers, 4 heads over 2 KV groups, ffn 352, untied 4k output layer), random weights, fp32,
SDPA. A step is forward, loss, backward and AdamW, as in the Trainer.

Windows alternate baseline / ours (A B B A ...) so that drift hits both alike; each side trains
its own copy of the same initial weights. Prints tokens/s (all tokens of the rows) for each and
the ratio ours / baseline, with the load average (other jobs on a 2-core machine move every
number).

    .venv/bin/python benchmarks/tune_logits.py [--steps 30] [--rounds 2]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def stdlib_texts(limit: int):
    from fullchain.data.stdlib_corpus import stdlib_files

    size = 0
    for path in stdlib_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        yield text
        size += len(text)
        if size >= limit:
            return


def batches(directory: Path, count: int):
    from fullchain.data.chat import tool_use
    from fullchain.data.chat.config import ToolUseConfig
    from fullchain.data.tokenize_config import TokenizerConfig
    from fullchain.data.tokenizer import save_hf, train_bpe
    from fullchain.tune.data import Collator, as_rows, pack, tokenize_conversation
    from transformers import AutoTokenizer

    cfg = ToolUseConfig(train_tasks=4000, schema_fraction=0.05, first_call_fraction=0.9)
    tasks = tool_use.generate(cfg, seed=1234)["train"]
    conversations = [tool_use.training_conversation(t, cfg, 1234) for t in tasks]
    tokenizer_cfg = TokenizerConfig(vocab_size=4096)
    save_hf(tokenizer_cfg, train_bpe(tokenizer_cfg, stdlib_texts(4 << 20)), directory)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    examples = [tokenize_conversation(tokenizer, c) for c in conversations]
    rows = as_rows([], pack(examples, 576))
    collate = Collator(tokenizer.pad_token_id)
    found = [collate(rows[i:i + 2]) for i in range(0, min(len(rows), 2 * count), 2)]
    labelled = sum(int((b["labels"] != -100).sum()) for b in found)
    tokens = sum(b["input_ids"].numel() for b in found)
    print(f"data: {len(conversations)} conversations -> {len(rows)} packed rows of <= 576 tokens; "
          f"{labelled / tokens:.1%} of the tokens carry a label", flush=True)
    return tokenizer, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="steps per window")
    parser.add_argument("--rounds", type=int, default=2, help="A B B A rounds")
    args = parser.parse_args()
    import torch
    from fullchain.tune.sft import LabelledLogits
    from transformers import LlamaConfig, LlamaForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, data = batches(Path(tmp), args.steps + 2)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=352,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=False,
                         attn_implementation="sdpa", use_cache=False)
    base = LlamaForCausalLM(config).train()
    sides = {}
    for name in ("baseline", "ours"):
        model = copy.deepcopy(base)
        sides[name] = {"model": model, "optimizer": torch.optim.AdamW(model.parameters(), lr=1e-3),
                       "selection": LabelledLogits(model.get_output_embeddings()) if name == "ours" else None,
                       "rates": []}

    def step(side: dict, batch: dict) -> None:
        model, selection = side["model"], side["selection"]
        inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
        if selection is None:
            loss = model(**inputs, labels=batch["labels"]).loss
        else:
            with selection.selecting(batch["labels"]):
                outputs = model(**inputs)
            loss = selection.loss(outputs, batch["labels"])
        loss.backward()
        side["optimizer"].step()
        side["optimizer"].zero_grad(set_to_none=True)

    def window(name: str) -> None:
        side = sides[name]
        for batch in data[:2]:  # warm-up: allocator, first-touch
            step(side, batch)
        started, tokens = time.perf_counter(), 0
        for batch in data[2:2 + args.steps]:
            step(side, batch)
            tokens += batch["input_ids"].numel()
        rate = tokens / (time.perf_counter() - started)
        side["rates"].append(rate)
        print(f"  {name:8s} {rate:9.0f} tokens/s", flush=True)

    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}", flush=True)
    for _ in range(args.rounds):
        for name in ("baseline", "ours", "ours", "baseline"):
            window(name)
    baseline = statistics.median(sides["baseline"]["rates"])
    ours = statistics.median(sides["ours"]["rates"])
    print(f"baseline (the model's own loss, every position): {baseline:.0f} tokens/s (median)")
    print(f"ours (output layer at labelled positions):       {ours:.0f} tokens/s (median)")
    print(f"ratio ours / baseline: {ours / baseline:.2f}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
