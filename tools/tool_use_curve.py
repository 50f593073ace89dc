"""How much training the demo's tiny model needs before it copies operands: a learning curve.

    .venv/bin/python tools/tool_use_curve.py --model <pretrain hf/> --chat <data.chat artifact> \\
        --first --no-schema --steps 1200 --eval-every 200 --batch 32

A plain PyTorch loop (AdamW, warm-up + cosine, loss on the assistant turns only as the tune stage
labels them, `fullchain.tune.data.tokenize_conversation`; rows padded per batch), NOT the tune
stage: it trains no packed rows and stops every `--eval-every` steps to score the first call on the
held-out split (greedy; `tools/tool_use_quality.py`'s definitions of valid and exact, split into
training wordings / unseen wordings) and prints a few unseen-wording replies. `--first` trains on
the conversations cut after their first call (the tune metric; ~120 tokens instead of ~290),
`--no-schema` drops the tool schema from the prompt, `--layers N` starts a fresh N-layer model
instead of the pretrained weights. docs/tune.md has the curves measured with it.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullchain.tune.data import tokenize_conversation  # noqa: E402
from tool_use_quality import parse_call, same_expression  # noqa: E402


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def first_call_index(messages: list[dict]) -> int:
    return next(i for i, m in enumerate(messages) if m["role"] == "assistant")


def schedule(step: int, steps: int, warmup: int = 20) -> float:
    """Linear warm-up, then cosine down to a tenth of the peak."""
    return min(1.0, (step + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))


def main(argv=None) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a pretrained HF model dir (pretrain's hf/)")
    parser.add_argument("--chat", required=True, help="the data.chat artifact dir")
    parser.add_argument("--layers", type=int, default=0, help="a fresh model with N layers (0: --model's weights)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=16, help="conversations per step")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-items", type=int, default=40, help="held-out prompts, half unseen wordings")
    parser.add_argument("--first", action="store_true", help="train on the first call only")
    parser.add_argument("--no-schema", action="store_true", help="no tool schema in any prompt")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data order (and of a fresh model)")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if args.layers:
        config = LlamaConfig.from_pretrained(args.model)
        config.num_hidden_layers = args.layers
        model = LlamaForCausalLM(config)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model)
    chat = Path(args.chat)
    train = read_jsonl(chat / "conversations" / "train.jsonl")
    heldout = read_jsonl(chat / "conversations" / "heldout.jsonl")
    tasks = {t["id"]: t for t in read_jsonl(chat / "tasks" / "heldout.jsonl")}
    if args.first:
        train = [{**r, "messages": r["messages"][: first_call_index(r["messages"]) + 1]} for r in train]
    if args.no_schema:
        train = [{k: v for k, v in r.items() if k != "tools"} for r in train]
    examples = [tokenize_conversation(tokenizer, r) for r in train]  # the tune stage's labels
    data = [(e.input_ids, e.labels) for e in examples]
    print(json.dumps({"parameters": sum(p.numel() for p in model.parameters()), "records": len(data),
                      "mean_tokens": round(sum(len(d[0]) for d in data) / len(data), 1)}), flush=True)
    half = args.eval_items // 2
    probes = {"seen": [r for r in heldout if tasks[r["id"]]["wording_seen"]][:half],
              "unseen": [r for r in heldout if not tasks[r["id"]]["wording_seen"]][:half]}
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def score() -> dict:
        model.eval()
        result, shown = {}, []
        for split, records in probes.items():
            valid = exact = 0
            for record in records:
                messages = record["messages"]
                first = first_call_index(messages)
                inputs = tokenizer.apply_chat_template(
                    messages[:first], tools=None if args.no_schema else record.get("tools"),
                    add_generation_prompt=True, return_dict=True, return_tensors="pt")
                with torch.no_grad():
                    out = model.generate(**inputs, max_new_tokens=40, do_sample=False, eos_token_id=end,
                                         pad_token_id=tokenizer.pad_token_id)
                reply = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=False)
                expression = parse_call(reply.split("<|im_end|>")[0])
                reference = messages[first]["tool_calls"][0]["function"]["arguments"]["expression"]
                valid += expression is not None
                exact += expression is not None and (
                    same_expression(expression, reference)
                    or same_expression(expression, tasks[record["id"]]["expression"]))
                if split == "unseen" and len(shown) < 4:
                    shown.append((messages[first - 1]["content"], reference, expression))
            result[split] = {"valid": valid / len(records), "exact": exact / len(records)}
        model.train()
        return {"heldout": result, "unseen_examples": shown}

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.95))
    model.train()
    order: list[int] = []
    seconds, tokens = 0.0, 0
    for step in range(args.steps):
        started = time.perf_counter()
        if len(order) < args.batch:
            order += rng.sample(range(len(data)), len(data))
        batch = [data[order.pop()] for _ in range(args.batch)]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        for group in optimizer.param_groups:
            group["lr"] = args.lr * schedule(step, args.steps)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        seconds += time.perf_counter() - started
        tokens += input_ids.numel()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            print(json.dumps({"step": step + 1, "examples": (step + 1) * args.batch, "loss": round(loss.item(), 4),
                              "train_seconds": round(seconds), "tokens_per_s": round(tokens / seconds),
                              **score()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
