"""The tune stage through the real runner (`fullchain run`, subprocesses): LoRA SFT on 2 ranks
under torchrun (losses equal one process's; merged hf/ read back by core's reader, merged logits
== base + adapter; cached on re-run), and a step killed with its runner that resumes from its
last checkpoint on the next run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fullchain.core import procs
from fullchain.core.contracts import read_hf_model
from fullchain.tune.stage import run
from tune_testing import metrics_rows

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def test_lora_sft_through_the_runner_on_two_ranks(tune_base_model, sft_set, tmp_path):
    """`fullchain run` under torchrun with 2 CPU ranks (gloo DDP through the Trainer): the
    step's losses equal a one-process run of the same config (same 8 samples per step, 2 micro-
    batches of 2 per rank vs 4 micro-batches in one process), the merged model is what base +
    adapter compute, and a second run reuses the artifact."""
    import torch
    from fullchain.core.config import to_dataclass
    from fullchain.tune.config import TuneConfig
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    env = dict(os.environ, FULLCHAIN_STORE=str(tmp_path / "store"), FULLCHAIN_RUNS=str(tmp_path / "runs"),
               FULLCHAIN_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "fullchain.core.cli", "run", "stages=[tune]", "tune=lora", "env=current",
            "launcher=torchrun", "launcher.nproc_per_node=2",
            "~graph.tune.inputs.model", "~graph.tune.inputs.conversations", f"tune.base_model={tune_base_model}", f"tune.dataset={sft_set}",
            # `++`: the YAML states only deltas from the dataclass defaults
            "++tune.batch.seq_length=128", "++tune.batch.micro_batch_size=2", "++tune.batch.global_batch_size=8",
            "++tune.schedule.train_iters=4", "++tune.schedule.epochs=null", "++tune.schedule.warmup_iters=1",
            "++tune.optimizer.lr=1e-2", "++tune.logging.log_interval=1", "++tune.lora.r=4",
            "++tune.lora.lora_dropout=0.0"]  # dropout masks would differ between 1 and 2 ranks
    first = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert first.returncode == 0, first.stderr[-5000:]
    (manifest_file,) = (tmp_path / "store" / "tune").glob("*/manifest.json")
    out = manifest_file.parent
    manifest = json.loads(manifest_file.read_text())
    assert manifest["contracts"] == {"hf_model": {"version": 1, "path": "hf"}}
    assert manifest["placement"]["world_size"] == 2
    metrics = manifest["metrics"]
    assert metrics["method"] == "lora" and metrics["train_steps"] == 4 and metrics["world_size"] == 2
    assert metrics["tokens_per_second"] > 0 and metrics["eval_loss"] > 0
    assert metrics["train_label_tokens"] > 0 and metrics["train_records"] == 65
    rows = metrics_rows(out)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4] and "eval_loss" in rows[-1]
    assert (out / "loss.png").stat().st_size > 0 and any((out / "tensorboard").iterdir())
    # base_model is hashed by content: the lineage names no upstream step
    assert manifest["inputs"] == {} and "base_model" in json.dumps(manifest["hash_payload"])
    one_rank = run(to_dataclass(TuneConfig, manifest["config"], "tune"), {}, tmp_path / "one_rank")
    assert one_rank["world_size"] == 1
    assert [r["loss"] for r in metrics_rows(tmp_path / "one_rank") if "loss" in r] == pytest.approx(
        [r["loss"] for r in rows if "loss" in r], abs=1e-4)

    merged = read_hf_model(out / "hf")  # what eval and deploy will read
    assert merged.chat_template and not merged.adapter
    tokenizer = AutoTokenizer.from_pretrained(str(out / "hf"))
    stops = merged.generation_config["eos_token_id"]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stops
    # the merged weights compute what base + adapter compute
    ids = torch.tensor([tokenizer.apply_chat_template(
        [{"role": "user", "content": "Describe a process of making crepes."}], add_generation_prompt=True,
        return_dict=True)["input_ids"]])
    with torch.no_grad():
        merged_logits = AutoModelForCausalLM.from_pretrained(str(out / "hf"))(ids).logits
        base = AutoModelForCausalLM.from_pretrained(str(tune_base_model))
        base_logits = base(ids).logits
        adapted = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
        adapter_logits = adapted(ids).logits
    torch.testing.assert_close(merged_logits, adapter_logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-3)  # the adapter did train

    again = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert again.returncode == 0 and "0 step(s) ran, 1 reused" in again.stderr


def test_a_killed_step_resumes_from_its_last_checkpoint(tune_base_model, sft_set, tmp_path):
    """SIGKILL the runner once the step saved checkpoint-4 (its stage process follows it); the
    next `fullchain run` resumes the incomplete artifact there: the log says so, metrics.jsonl
    holds every step once, and the rows before the checkpoint are the first attempt's."""
    import signal
    import time

    env = dict(os.environ, FULLCHAIN_STORE=str(tmp_path / "store"), FULLCHAIN_RUNS=str(tmp_path / "runs"),
               FULLCHAIN_CACHE=str(tmp_path / "cache"))
    args = [sys.executable, "-m", "fullchain.core.cli", "run", "stages=[tune]", "env=current",
            "~graph.tune.inputs.model", "~graph.tune.inputs.conversations",
            f"tune.base_model={tune_base_model}", f"tune.dataset={sft_set}",
            "++tune.batch.seq_length=128", "++tune.schedule.train_iters=16", "tune.schedule.epochs=null",
            "++tune.checkpoint.save_interval=4", "++tune.logging.log_interval=1"]
    killed = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not list((tmp_path / "store").glob("tune/*/checkpoints/checkpoint-4/trainer_state.json")):
        assert killed.poll() is None and time.time() < deadline, "no checkpoint-4 before the end"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    (out,) = (p for p in (tmp_path / "store" / "tune").iterdir() if p.is_dir())
    while procs.find(procs.step_token(out)):  # the step's processes, by the runner's token
        assert time.time() < deadline, "the stage process outlived its killed runner"
        time.sleep(0.1)  # (a checkpoint it left half-written is skipped: test_tune_stage.py)
    assert not (out / "manifest.json").exists()
    before = [r for r in metrics_rows(out) if "loss" in r]
    assert 4 <= len(before) < 16

    again = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "manifest.json").exists()
    log = (out / "logs" / "stderr.log").read_text()
    resumed_at = int(log.rsplit("resuming from ", 1)[1].split("checkpoint-", 1)[1].split()[0])
    assert resumed_at >= 4 and resumed_at % 4 == 0
    rows = [r for r in metrics_rows(out) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 17))
    assert rows[:resumed_at] == before[:resumed_at]
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert [metrics["first_loss"], metrics["last_loss"]] == pytest.approx(
        [rows[0]["loss"], rows[-1]["loss"]], abs=1e-6)  # the whole run's, not only the resumed part
