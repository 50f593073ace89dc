"""CPU fine-tuning throughput of the tune stage, against HF `Trainer` + peft on the same model.

Model: HF Llama of the `small` shape (hidden 384, 6 layers, 6 heads, ffn 1024, untied, SDPA),
random weights, with the data stage's tokenizer recipe (byte-level BPE, 8,192 tokens, ChatML +
tool-call template) trained on the alpaca demo. Data: LLaMA-Factory's alpaca_en_demo
(../shared/data) as a conversation set. Batch: micro 4, global 8, seq 512, fp32, LoRA r 8 on
q/k/v/o.

1. LoRA SFT tokens/s (non-pad tokens, steps after the first): `fullchain.tune.stage.run` vs a
   plain HF Trainer + peft script (apply_chat_template's assistant mask, DataCollatorForSeq2Seq
   padding, the same TrainingArguments values). Goal >= 1.0.
2. Packed vs unpacked effective (non-pad) tokens/s of the stage on the same data.
3. Peak RSS of full fine-tuning vs LoRA (the stage).

Every window is a FRESH process of this script (`--window`), interleaved A B B A for the ratio,
all with the same threads and `MALLOC_TOP_PAD_` (what the runner gives a stage), so drift and
other jobs hit both sides alike. The load average is printed: other jobs on a 2-core machine move
every number.

    .venv/bin/python benchmarks/tune_cpu.py [--steps 6] [--rounds 1]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("FULLCHAIN_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
ALPACA = SHARED / "llamafactory-sft-demo" / "alpaca_en_demo.json"
SEQ, MICRO, GLOBAL, RECORDS = 512, 4, 8, 400
MALLOC_TOP_PAD = "1073741824"


def _conversation(record: dict) -> dict:
    question = record["instruction"] + (f"\n\n{record['input']}" if record["input"] else "")
    return {"messages": [{"role": "user", "content": question},
                         {"role": "assistant", "content": record["output"]}]}


def prepare(root: Path) -> None:
    """Tokenizer, small model and conversation set under root (once per benchmark run)."""
    import shutil

    import torch
    from fullchain.core.contracts import write_conversations
    from fullchain.data.tokenize_config import TokenizerConfig
    from fullchain.data.tokenizer import save_hf, train_bpe
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    records = json.loads(ALPACA.read_text())
    cfg = TokenizerConfig(vocab_size=8192)
    save_hf(cfg, train_bpe(cfg, (r["instruction"] + " " + r["output"] for r in records)), root / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(root / "tokenizer"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=384, intermediate_size=1024,
                         num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=6,
                         max_position_embeddings=1024, tie_word_embeddings=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(root / "model"))
    GenerationConfig(eos_token_id=tokenizer.eos_token_id).save_pretrained(str(root / "model"))
    for item in (root / "tokenizer").iterdir():
        shutil.copy2(item, root / "model" / item.name)
    write_conversations(root / "conversations", "messages",
                        {"train": [_conversation(r) for r in records[:RECORDS]]})


def _tune_config(root: Path, steps: int, method: str, packing: bool):
    from fullchain.core.config import to_dataclass
    from fullchain.tune.config import TuneConfig

    return to_dataclass(TuneConfig, {
        "method": method, "base_model": str(root / "model"), "dataset": str(root / "conversations"),
        "packing": packing, "eval_split": None,
        "batch": {"seq_length": SEQ, "micro_batch_size": MICRO, "global_batch_size": GLOBAL},
        "optimizer": {"lr": 2e-4}, "schedule": {"train_iters": steps, "warmup_iters": 0},
        "checkpoint": {"save_interval": 0}, "logging": {"log_interval": 1, "tensorboard": False}},
        "tune")


MARKS: list[tuple[float, float, int]] = []
"""(wall, process CPU, non-pad tokens seen) after every optimizer step, on both sides."""


def _instrument_trainer() -> None:
    """Give every Trainer built in this process (the stage's, the baseline's) the same
    step-end marks: both sides are measured by the same clock at the same point."""
    from transformers import Trainer, TrainerCallback

    class Marks(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            MARKS.append((time.perf_counter(), time.process_time(), state.num_input_tokens_seen))

    original = Trainer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(Marks())

    Trainer.__init__ = init


def window_ours(root: Path, steps: int, method: str, packing: bool) -> None:
    from fullchain.tune.stage import run

    run(_tune_config(root, steps, method, packing), {}, Path(tempfile.mkdtemp(dir=root)))


def window_baseline(root: Path, steps: int) -> None:
    """What a user writes with HF Trainer + peft: the chat template's assistant mask as labels,
    DataCollatorForSeq2Seq padding, the same arguments as the stage's translation gives."""
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(root / "model"))
    rows = []
    with open(root / "conversations" / "train.jsonl") as handle:
        for line in handle:
            enc = tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True)
            ids = list(enc["input_ids"])[:SEQ]
            mask = list(enc["assistant_masks"])[:SEQ]
            rows.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                         "labels": [t if m else -100 for t, m in zip(ids, mask)]})
    model = AutoModelForCausalLM.from_pretrained(str(root / "model"), attn_implementation="sdpa")
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    args = TrainingArguments(
        output_dir=str(Path(tempfile.mkdtemp(dir=root))), per_device_train_batch_size=MICRO,
        gradient_accumulation_steps=GLOBAL // MICRO, learning_rate=2e-4, weight_decay=0.1,
        adam_beta2=0.95, max_steps=steps, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": 3e-5}, logging_steps=1, save_strategy="no", report_to=[],
        seed=1234, use_cpu=True, disable_tqdm=True, remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding")
    trainer = Trainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True))
    trainer.train()


def _window(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    root = Path(args.root)
    _instrument_trainer()
    if args.side == "baseline":
        window_baseline(root, args.steps)
    else:
        window_ours(root, args.steps, args.method, args.packing)
    (wall0, cpu0, tokens0), (wall1, cpu1, tokens1) = MARKS[0], MARKS[-1]  # the first step excluded
    result = {"tokens_per_second": (tokens1 - tokens0) / (wall1 - wall0),
              "tokens_per_cpu_second": (tokens1 - tokens0) / (cpu1 - cpu0)}
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def _spawn(root: Path, side: str, steps: int, threads: int, method: str = "lora",
           packing: bool = False) -> dict:
    env = dict(os.environ, MALLOC_TOP_PAD_=MALLOC_TOP_PAD, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--window", "--root", str(root), "--side", side, "--steps", str(steps),
           "--threads", str(threads), "--method", method] + (["--packing"] if packing else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{side} window failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    label = f"{side}{' ' + method if side == 'ours' else ''}{' packed' if packing else ''}"
    print(f"  {label:<22} {result['tokens_per_second']:9.1f} tokens/s {result['tokens_per_cpu_second']:8.1f} "
          f"per CPU-s  max RSS {result['max_rss_mb']:7.0f} MB"
          f"  (load {os.getloadavg()[0]:.2f})", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1, help="A B B A rounds for the LoRA ratio")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", default="1,2,3", help="which measurements (comma-separated)")
    parser.add_argument("--window", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="lora", help=argparse.SUPPRESS)
    parser.add_argument("--packing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.window:
        return _window(args)
    root = Path(tempfile.mkdtemp(prefix="tune_bench_"))
    print(f"load average at start: {os.getloadavg()}; preparing model and data in {root}", flush=True)
    prepare(root)
    parts = set(args.parts.split(","))
    if "1" in parts:
        _compare_lora(root, args)
    if "2" in parts:
        _compare_packing(root, args)
    if "3" in parts:
        _compare_memory(root, args)
    print(f"load average at end: {os.getloadavg()}")


RATES = (("tokens_per_second", "tokens/s"), ("tokens_per_cpu_second", "tokens per CPU-s"))


def _abba(rounds: int, a, b) -> tuple[list, list]:
    """Interleaved A B B A windows, `rounds` times: a drift in the machine's load hits both sides
    alike. Returns (A's results, B's results)."""
    first, second = [], []
    for _ in range(rounds):
        first.append(a())
        second.append(b())
        second.append(b())
        first.append(a())
    return first, second


def _compare_lora(root: Path, args: argparse.Namespace) -> None:
    import statistics

    print(f"1. LoRA SFT, small shape, seq {SEQ}, micro {MICRO}, global {GLOBAL}, {args.steps} steps "
          f"(first excluded), {args.threads} threads", flush=True)
    base, ours = _abba(args.rounds, lambda: _spawn(root, "baseline", args.steps, args.threads),
                       lambda: _spawn(root, "ours", args.steps, args.threads))
    for key, unit in RATES:
        mine, theirs = (statistics.median(r[key] for r in side) for side in (ours, base))
        print(f"   ours {mine:.1f} vs HF Trainer + peft {theirs:.1f} {unit}: ratio {mine / theirs:.3f} "
              "(goal >= 1.0)", flush=True)


def _compare_packing(root: Path, args: argparse.Namespace) -> None:
    import statistics

    print("2. packed vs unpacked effective (non-pad) tokens/s, LoRA", flush=True)
    unpacked, packed = _abba(args.rounds, lambda: _spawn(root, "ours", args.steps, args.threads),
                             lambda: _spawn(root, "ours", args.steps, args.threads, packing=True))
    for key, unit in RATES:
        mine, theirs = (statistics.median(r[key] for r in side) for side in (packed, unpacked))
        print(f"   packed {mine:.1f} vs unpacked {theirs:.1f} {unit}: ratio {mine / theirs:.2f} "
              "(expect > 1.5)", flush=True)


def _compare_memory(root: Path, args: argparse.Namespace) -> None:
    print("3. peak RSS, full fine-tuning vs LoRA", flush=True)
    lora = _spawn(root, "ours", args.steps, args.threads)
    full = _spawn(root, "ours", args.steps, args.threads, method="sft")
    print(f"   full {full['max_rss_mb']:.0f} MB vs LoRA {lora['max_rss_mb']:.0f} MB "
          f"({full['max_rss_mb'] / lora['max_rss_mb']:.2f}x); full {full['tokens_per_second']:.1f} vs "
          f"LoRA {lora['tokens_per_second']:.1f} tokens/s", flush=True)


if __name__ == "__main__":
    main()
