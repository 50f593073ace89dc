"""Shared fixtures: a tiny data artifact built from the real tinyshakespeare text.

It has the layout the data stage writes (`dataset.json`, a HF tokenizer dir, Megatron .bin/.idx
under packed/), so the pretrain stage is tested against the documented contract, not a mock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_DATA = Path(os.environ.get("FULLCHAIN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
TESTS_DIR = Path(__file__).resolve().parent


def build_data_artifact(root: Path, text_bytes: int = 300_000, vocab_size: int = 384) -> Path:
    """Write a data artifact at `root` from the first `text_bytes` of tinyshakespeare."""
    import numpy
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    source = SHARED_DATA / "tinyshakespeare" / "input.txt"
    text = source.read_text(encoding="utf-8")[:text_bytes]
    # A document per speech (blank-line separated), as a data stage would emit them.
    documents = [d.strip() for d in text.split("\n\n") if d.strip()]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(documents, trainer)
    from fullchain.core.contracts import PackedSplit, validate_outputs, write_packed_corpus

    tokenizer_dir = root / "tokenizer"
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                            pad_token="<|pad|>").save_pretrained(tokenizer_dir)
    eod = tokenizer.token_to_id("<|endoftext|>")
    pad = tokenizer.token_to_id("<|pad|>")

    n_valid = max(1, len(documents) // 20)
    parts = {"train": documents[n_valid:], "valid": documents[:n_valid]}
    splits = {}
    for name, docs in parts.items():
        prefix = root / "packed" / "shakespeare" / name
        prefix.parent.mkdir(parents=True, exist_ok=True)
        builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=numpy.uint16)
        tokens = 0
        for encoding in tokenizer.encode_batch(docs):
            ids = encoding.ids + [eod]
            tokens += len(ids)
            builder.add_document(torch.tensor(ids), [len(ids)])
        builder.finalize(str(prefix) + ".idx")
        splits[name] = PackedSplit(prefixes=[f"packed/shakespeare/{name}"], weights=[1.0],
                                   num_tokens=[tokens], num_documents=[len(docs)])
    # core's packed_corpus writer (what the data stage calls), and a manifest declaring the
    # contracts as the runner would after the worker validated them
    write_packed_corpus(root, tokenizer="tokenizer", vocab_size=tokenizer.get_vocab_size(),
                        eod_id=eod, pad_id=pad, bos_id=None, dtype="uint16", splits=splits)
    contracts = validate_outputs(root, {"packed_corpus": "dataset.json", "tokenizer": "tokenizer"})
    (root / "manifest.json").write_text(json.dumps({"stage": "data", "step_id": "fixture-data",
                                                    "contracts": contracts}))
    return root


@pytest.fixture(scope="session")
def data_artifact(tmp_path_factory) -> Path:
    if not (SHARED_DATA / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set FULLCHAIN_SHARED_DATA)")
    return build_data_artifact(tmp_path_factory.mktemp("data"))


def clean_env() -> dict:
    """os.environ without the variables an in-process single-rank run left behind (its
    MASTER_PORT may still be bound), one thread per rank, the runner's malloc padding."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MALLOC_TOP_PAD_="1073741824")
    return env


def torchrun(nproc: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `tests/_parallel_worker.py ARGS` under torchrun with gloo, one thread per rank."""
    env = clean_env()
    # --standalone: a local rendezvous on a free port, so test runs never collide.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(nproc), str(TESTS_DIR / "_parallel_worker.py"), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise AssertionError(f"torchrun failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


# Every multi-rank check shares ONE 2-rank torchrun launch (`parallel_runs`): a launch costs
# ~15 s of imports on each rank before any work, several times what the tiny runs take.
PARALLEL_ITERS = 6
PARALLEL_HALF = PARALLEL_ITERS // 2
PARALLEL_LAYOUTS = {"tp2": {"tensor_parallel_size": 2}, "pp2": {"pipeline_parallel_size": 2},
                    "dp2": {"data_parallel_size": 2}}


@pytest.fixture(scope="session")
def parallel_runs(data_artifact, tmp_path_factory) -> Path:
    """One torchrun launch (2 ranks, gloo) doing, in one process group:
    - stage runs at TP=2, PP=2, DP=2 (`<root>/<layout>/`, metrics.jsonl, result_rank*.json),
      each saving at PARALLEL_HALF: the TP=2 checkpoint then feeds the TP=2 -> TP=1 reshard test;
      the DP=2 run exports to HF (the export subprocess started under torchrun);
    - test_model's forward/backward at TP=2 and PP=2 (`<root>/layout_tp2pp1.json`, ...);
    - test_hf's untrained TP=2 model saved in the artifact layout (`<root>/hf_tp2/`)."""
    root = tmp_path_factory.mktemp("parallel")
    jobs = []
    for name, parallel in PARALLEL_LAYOUTS.items():
        # dp2 also exports: rank 0 starts the HF export subprocess from inside torchrun.
        cfg = tiny_config(schedule={"train_iters": PARALLEL_ITERS},
                          checkpoint={"save_interval": PARALLEL_HALF}, parallel=parallel,
                          export_hf=name == "dp2")
        jobs.append({"call": "_parallel_worker:run_stage",
                     "args": [str(write_config(cfg, root / f"{name}.json")), str(data_artifact),
                              str(root / name)]})
    for tp, pp in ((2, 1), (1, 2)):
        jobs.append({"call": "test_model:layout_job",
                     "args": [tp, pp, str(root / f"layout_tp{tp}pp{pp}.json")]})
    jobs.append({"call": "test_hf:save_tp2_checkpoint", "args": [str(root / "hf_tp2")]})
    plan = root / "plan.json"
    plan.write_text(json.dumps(jobs, indent=1))
    torchrun(2, "--plan", str(plan))
    return root


def tiny_config(**overrides):
    """A PretrainConfig small enough for a CPU test (2 layers, hidden 64, GQA, seq 32), built the
    way the worker builds it from a spec (`to_dataclass`). A dict override updates that group
    (`schedule={"train_iters": 40}`), anything else replaces the field."""
    from fullchain.core.config import to_dataclass
    from fullchain.pretrain import PretrainConfig

    fields = {
        "model": dict(name="tiny", num_layers=2, hidden_size=64, num_attention_heads=4,
                      num_query_groups=2, ffn_hidden_size=128, max_position_embeddings=64,
                      # 384 tokens pad to 384 at TP=1 and TP=2 (64 * tp divides it): same weights.
                      make_vocab_size_divisible_by=64),
        "batch": dict(seq_length=32, micro_batch_size=2, global_batch_size=4),
        "optimizer": dict(lr=3e-3),
        "schedule": dict(train_iters=6, warmup_iters=1, min_lr=3e-4),
        "validation": dict(eval_interval=0, eval_iters=1),
        "checkpoint": dict(save_interval=0),
        "logging": dict(tensorboard=False, peak_flops=1e11),
        "export_hf": False,
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            fields[key] = {**fields.get(key, {}), **value}
        else:
            fields[key] = value
    return to_dataclass(PretrainConfig, fields, "pretrain")


def write_config(cfg, path: Path) -> Path:
    import dataclasses

    path.write_text(json.dumps(dataclasses.asdict(cfg)))
    return path


def losses(out: Path) -> list[float]:
    """Per-iteration training losses from an artifact's metrics.jsonl."""
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]  # iteration 0: validation only


def run_in_process(cfg, data_dir: Path, out: Path) -> dict:
    from fullchain.core.artifact import Artifact
    from fullchain.pretrain import run

    out.mkdir(parents=True, exist_ok=True)
    return run(cfg, {"corpus": Artifact.load(data_dir)}, out)
