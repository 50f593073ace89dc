"""Shared fixtures of the eval tests: the eval environment (built once per session when missing),
tiny HF models as step artifacts (the data stage's tokenizer recipe, a 2-layer Llama), the
synthetic tool-use task from chat_data's generator, a packed validation split, and a canned
OpenAI-compatible server that answers the first k distinct items of each benchmark right (gold
read from the ORIGINAL files in ../shared/data, independently of the stage's conversions)."""
import bz2
import csv
import glob
import gzip
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SHARED_DATA = Path(os.environ.get("FULLCHAIN_SHARED_DATA", ROOT / ".." / "shared" / "data")).resolve()
EVAL_PYTHON = ROOT / ".venvs" / "eval" / "bin" / "python"
SFT_DEMO = SHARED_DATA / "llamafactory-sft-demo" / "alpaca_en_demo.json"

BENCHMARKS = [  # the `benchmarks=shared` list (conf/benchmarks/shared.yaml), every supported one (+ arc_easy, hellaswag)
    {"name": "gsm8k", "path": f"{SHARED_DATA}/gsm8k/test.jsonl", "text_fields": ["question"]},
    {"name": "arc_challenge", "path": f"{SHARED_DATA}/arc/arc_challenge.jsonl", "text_fields": ["query"], "mode": "ppl"},
    {"name": "arc_easy", "path": f"{SHARED_DATA}/arc/arc_easy.jsonl", "text_fields": ["query"], "mode": "ppl"},
    {"name": "boolq", "path": f"{SHARED_DATA}/boolq/boolq.jsonl", "text_fields": ["query"], "mode": "ppl"},
    {"name": "mmlu", "path": f"{SHARED_DATA}/mmlu/test/*.csv", "text_fields": ["question"], "mode": "ppl"},
    {"name": "ceval", "path": f"{SHARED_DATA}/ceval/val/*.csv", "text_fields": ["question"], "mode": "ppl"},
    {"name": "cmmlu", "path": f"{SHARED_DATA}/cmmlu/test/*.csv", "text_fields": ["Question"], "mode": "ppl"},
    {"name": "hellaswag", "path": f"{SHARED_DATA}/hellaswag/hellaswag_val_full.txt.bz2", "text_fields": ["query"], "mode": "ppl"},
    *({"name": name, "path": f"{SHARED_DATA}/llmfoundry-commonsense-mc/{name}.jsonl", "text_fields": ["query"], "mode": "ppl"}
      for name in ("piqa", "copa", "openbook_qa", "commonsense_qa")),  # (shared.yaml: a superset of text_fields)
    {"name": "winogrande", "path": f"{SHARED_DATA}/llmfoundry-commonsense-mc/winogrande.jsonl",
     "text_fields": ["context_options", "continuation"], "mode": "ppl"},
    {"name": "truthfulqa_mc1", "path": f"{SHARED_DATA}/truthfulqa/TruthfulQA.csv", "text_fields": ["Question"], "mode": "ppl"},
    {"name": "truthfulqa_gen", "path": f"{SHARED_DATA}/truthfulqa/TruthfulQA.csv", "text_fields": ["Question"]},
    {"name": "humaneval", "path": f"{SHARED_DATA}/humaneval/HumanEval.jsonl.gz", "text_fields": ["prompt"]},
]
METRICS = {"truthfulqa_gen": "rougeL_acc", "humaneval": "pass@1"}
"""The headline metric of a benchmark whose metric is not `accuracy`."""


# ---------------------------------------------------------------------------- environment


@pytest.fixture(scope="session")
def eval_python() -> Path:
    """The eval environment's interpreter; built with `fullchain env sync eval` when missing (a
    progress line, not silence). A build that fails fails the tests with its reason."""
    if not EVAL_PYTHON.is_file():
        print(f"\n[eval tests] building the eval environment ({EVAL_PYTHON.parent.parent}) ...",
              file=sys.stderr, flush=True)
        started = time.time()
        result = subprocess.run([str(ROOT / ".venv" / "bin" / "fullchain"), "env", "sync", "eval"],
                                cwd=ROOT, capture_output=True, text=True, timeout=1200)
        if result.returncode != 0:
            pytest.fail(f"`fullchain env sync eval` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        print(f"[eval tests] eval environment built in {time.time() - started:.0f}s",
              file=sys.stderr, flush=True)
    return EVAL_PYTHON


def write_artifact(directory: Path, stage: str, node: str, step_id: str, contracts: dict) -> Path:
    """A complete step directory (its manifest, typed outputs {type: path}) so the stage sees a
    real Artifact."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").write_text(json.dumps(
        {"stage": stage, "node": node, "step_id": step_id, "config": {},
         "contracts": {t: {"version": 1, "path": p} for t, p in contracts.items()}}))
    return directory


def run_stage(python: Path, out: Path, config: dict, inputs: dict, timeout: float = 900):
    """The eval stage through the worker entry point (`python -m fullchain.eval <request>`), as
    the runner starts it: config converted by core, outputs validated by their readers."""
    out.mkdir(parents=True, exist_ok=True)
    request = {"module": "fullchain.eval", "config_class": "fullchain.eval.config:EvalConfig",
               "stage": "eval", "config": config, "inputs": inputs, "out": str(out),
               "outputs": {"eval_results": "."}}
    file = out / ".fullchain" / "request.json"
    file.parent.mkdir(exist_ok=True)
    file.write_text(json.dumps(request))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([str(python), "-m", "fullchain.eval", str(file)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=out)


# ---------------------------------------------------------------------------- models


@pytest.fixture(scope="session")
def eval_tokenizer(tmp_path_factory) -> Path:
    from fullchain.data.tokenize_config import TokenizerConfig
    from fullchain.data.tokenizer import save_hf, train_bpe

    cfg = TokenizerConfig(vocab_size=512)
    texts = [r["instruction"] + " " + r["output"] for r in json.loads(SFT_DEMO.read_text())[:300]]
    directory = tmp_path_factory.mktemp("eval_tokenizer")
    save_hf(cfg, train_bpe(cfg, texts), directory)
    return directory


def build_model(directory: Path, tokenizer_dir: Path, seed: int = 0, chat_template: bool = True) -> Path:
    """A tiny random Llama (2 layers, hidden 32) saved as an hf_model directory."""
    import shutil

    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=88,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(str(directory), safe_serialization=True)
    GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id).save_pretrained(str(directory))
    for item in Path(tokenizer_dir).iterdir():
        if chat_template or item.name != "chat_template.jinja":
            shutil.copy2(item, directory / item.name)
    if not chat_template:
        config_file = directory / "tokenizer_config.json"
        doc = json.loads(config_file.read_text())
        doc.pop("chat_template", None)
        config_file.write_text(json.dumps(doc))
    return directory


@pytest.fixture(scope="session")
def model_artifacts(eval_tokenizer, tmp_path_factory) -> dict[str, Path]:
    """`pretrain` (base) and `tune` (chat) step artifacts, each with an hf/ model."""
    root = tmp_path_factory.mktemp("eval_models")
    out = {}
    for seed, (stage, node) in enumerate([("pretrain", "pretrain"), ("tune", "tune")]):
        artifact = write_artifact(root / node, stage, node, f"{node}-0000{seed}", {"hf_model": "hf"})
        build_model(artifact / "hf", eval_tokenizer, seed=seed)
        out[node] = artifact
    return out


# ---------------------------------------------------------------------------- data inputs


@pytest.fixture(scope="session")
def tool_tasks(tmp_path_factory) -> Path:
    """chat_data's tool-use tasks (its real generator), as a tool_tasks step artifact."""
    from fullchain.core.contracts import write_tool_tasks
    from fullchain.data.chat.config import ToolUseConfig
    from fullchain.data.chat.tool_use import SYSTEM_PROMPT, TOOLS, generate

    splits = generate(ToolUseConfig(train_tasks=8, heldout_tasks=8), seed=0)
    artifact = write_artifact(tmp_path_factory.mktemp("eval_tasks"), "data.chat", "chat_data", "chat-00001",
                              {"tool_tasks": "tasks"})
    write_tool_tasks(artifact / "tasks", splits, [TOOLS["calculator"]], system=SYSTEM_PROMPT)
    return artifact


@pytest.fixture(scope="session")
def corpus(eval_tokenizer, tmp_path_factory) -> Path:
    """A data artifact: packed train/valid splits (Megatron's builder) of alpaca text, the
    tokenizer, and a decontamination.json that flags (keeps) 2 gsm8k items, one of them scored."""
    import shutil

    import numpy as np
    from fullchain.core.contracts import PackedSplit, write_packed_corpus
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    from transformers import AutoTokenizer

    artifact = write_artifact(tmp_path_factory.mktemp("eval_corpus"), "data", "data", "data-00001",
                              {"packed_corpus": "dataset.json", "tokenizer": "tokenizer"})
    shutil.copytree(eval_tokenizer, artifact / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(eval_tokenizer))
    records = json.loads(SFT_DEMO.read_text())
    (artifact / "packed").mkdir()
    splits = {}
    for split, chunk in (("train", records[:20]), ("valid", records[990:996])):
        prefix = artifact / "packed" / split
        builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.int32)
        for record in chunk:
            ids = tokenizer(record["output"])["input_ids"] + [tokenizer.eos_token_id]
            builder.add_document(np.array(ids, dtype=np.int32), [len(ids)])
        builder.finalize(f"{prefix}.idx")
        splits[split] = PackedSplit([f"packed/{split}"], [1.0], [0])
    write_packed_corpus(artifact, tokenizer="tokenizer", vocab_size=len(tokenizer),
                        eod_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, bos_id=None,
                        dtype="int32", splits=splits)
    # found: the first gsm8k item the tiny-models test scores (3 items, seed 0) and one it does not
    from fullchain.eval.benchmarks import convert
    scored = convert("gsm8k", f"{SHARED_DATA}/gsm8k/test.jsonl", artifact / "drawn", max_items=3).item_ids
    (artifact / "decontamination.json").write_text(json.dumps({
        "ngram_size": 13, "action": "flag", "contaminated_documents": 2, "benchmarks": {
            "gsm8k": {"items": 1319, "items_found": 2, "found_item_ids": sorted([scored[0], "test.jsonl:1319"])},
            "mmlu": {"items": 14042, "items_found": 0, "found_item_ids": []}}}))
    return artifact


# ---------------------------------------------------------------------------- canned server


def _truthfulqa(best: str, wrong: str):
    """TruthfulQA's two benchmarks share the question: its MC1 prompt lists lettered options
    (right: the letter of the best answer, wherever the conversion shuffled it), the generation
    prompt does not (right: the best answer's text, wrong: an incorrect answer's)."""
    def variant(prompt: str) -> tuple[str, str, str]:
        options = dict((m.group(2).strip(), m.group(1)) for m in re.finditer(r"^([A-P])\. (.*)$", prompt, re.M))
        if options:
            return "truthfulqa_mc1", options[best], options[wrong]
        return "truthfulqa_gen", best, wrong
    return variant


def gold_items() -> dict[str, tuple]:
    """Question text -> (benchmark, right reply, wrong reply), read from the original files;
    TruthfulQA's entry is a function of the prompt (see _truthfulqa)."""
    items: dict[str, tuple[str, str, str]] = {}
    letters = "ABCD"
    for line in (SHARED_DATA / "gsm8k" / "test.jsonl").read_text().splitlines():
        record = json.loads(line)
        answer = record["answer"].split("#### ")[-1].replace(",", "").strip()
        items[record["question"]] = ("gsm8k", f"The answer is {answer}", "The answer is -987654")
    for name, file in (("arc_challenge", "arc/arc_challenge.jsonl"), ("arc_easy", "arc/arc_easy.jsonl"),
                       ("boolq", "boolq/boolq.jsonl")):
        for line in (SHARED_DATA / file).read_text().splitlines():
            record = json.loads(line)
            n = len(record["choices"])
            key = record["query"][-200:]  # the question's tail: in the prompt whatever prefix it gets
            items[key] = (name, "ABCD"[record["gold"]], "ABCD"[(record["gold"] + 1) % n])
    for name, pattern, question, answer in (
            ("mmlu", "mmlu/test/*.csv", "question", "answer"), ("ceval", "ceval/val/*.csv", "question", "answer"),
            ("cmmlu", "cmmlu/test/*.csv", "Question", "Answer")):
        for file in sorted(glob.glob(str(SHARED_DATA / pattern))):
            with open(file, encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    gold = row[answer] if row[answer] in letters else letters[int(row[answer])]
                    items[row[question]] = (name, gold, letters[(letters.index(gold) + 1) % 4])
    foundry = SHARED_DATA / "llmfoundry-commonsense-mc"
    for name in ("piqa", "copa", "openbook_qa", "commonsense_qa", "winogrande"):
        for line in (foundry / f"{name}.jsonl").read_text().splitlines():
            record = json.loads(line)
            if name == "winogrande":  # twin items share their contexts: the whole first sentence
                key, n = f"{record['context_options'][0]} {record['continuation']}", 2
            elif name == "commonsense_qa":  # the question before the lettered choices in `query`
                key, n = record["query"].split("\nChoices:")[0].removeprefix("Question: "), len(record["choices"])
            else:
                key, n = record["query"][-200:], len(record["choices"])
            items[key] = (name, "ABCDE"[record["gold"]], "ABCDE"[(record["gold"] + 1) % n])
    with bz2.open(SHARED_DATA / "hellaswag" / "hellaswag_val_full.txt.bz2", "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    for start in range(0, len(lines) - 5, 6):
        gold = int(lines[start + 1])
        items[lines[start].split(": ", 1)[1]] = ("hellaswag", "ABCD"[gold], "ABCD"[(gold + 1) % 4])
    with open(SHARED_DATA / "truthfulqa" / "TruthfulQA.csv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            correct = [a.strip() for a in row["Correct Answers"].split(";")]
            wrong = next(a.strip() for a in row["Incorrect Answers"].split(";") if a.strip() not in correct)
            items[row["Question"].strip()] = (_truthfulqa(row["Best Answer"].strip(), wrong),)
    with gzip.open(SHARED_DATA / "humaneval" / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            problem = json.loads(line)
            items[problem["prompt"]] = ("humaneval", f"```python\n{problem['prompt']}{problem['canonical_solution']}```",
                                        f"```python\n{problem['prompt']}    raise NotImplementedError\n```")
    return items


class CannedServer:
    """OpenAI-compatible chat completions on 127.0.0.1: the first `right` distinct items of each
    benchmark get the gold reply, the others a wrong one; tool-use tasks get a correct calculator
    call (their whole expression) for the first `right` tasks and plain text otherwise."""

    def __init__(self, right: int, tool_tasks: list[dict] | None = None):
        self.right = right
        self.items = gold_items()
        for task in tool_tasks or []:
            call = json.dumps({"name": "calculator", "arguments": {"expression": task["expression"]}})
            self.items[task["question"]] = ("tool_use", f"<tool_call>\n{call}\n</tool_call>",
                                            "I think the answer is 12.")
        self.keys = sorted(self.items, key=len, reverse=True)
        self.decided: dict[tuple[str, str], bool] = {}
        self.counts: dict[str, int] = {}
        self.unknown: list[str] = []
        self.tool_roles: set[str] = set()
        """Roles of the messages that declared the tools (must be the system turn)."""
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reply(self, prompt: str) -> str:
        key = next((k for k in self.keys if k and k in prompt), None)
        if key is None:
            self.unknown.append(prompt[-300:])
            return "?"
        entry = self.items[key]
        benchmark, right, wrong = entry[0](prompt) if len(entry) == 1 else entry
        with self.lock:
            if (benchmark, key) not in self.decided:
                self.counts[benchmark] = self.counts.get(benchmark, 0) + 1
                self.decided[(benchmark, key)] = self.counts[benchmark] <= self.right
            return right if self.decided[(benchmark, key)] else wrong

    def _handler(self):
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": "canned", "object": "model"}]})

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = "\n".join(str(m.get("content", "")) for m in request["messages"])
                canned.tool_roles.update(m["role"] for m in request["messages"] if "<tools>" in str(m.get("content")))
                content = canned.reply(prompt)
                self._send({"id": "x", "object": "chat.completion", "created": 0, "model": "canned",
                            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                         "message": {"role": "assistant", "content": content}}],
                            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

        return Handler

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def results(out: Path) -> dict[tuple[str, str, str], float]:
    rows = json.loads((out / "results.json").read_text())["rows"]
    return {(r["model"], r["benchmark"], r["metric"]): r["score"] for r in rows}


def last_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    return lines[-1] if lines else result.stderr[-2000:]
