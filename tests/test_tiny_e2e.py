"""The tiny end-to-end run through the real CLI, as the README's demo does it (shortened: see
chain_testing.TINY): corpus (the Python standard library) -> data -> pretrain -> tune on the
synthetic tool-use conversations (chat_data, with the data step's tokenizer) -> eval (OpenCompass,
in its own environment: base vs tuned) -> deploy (served on the CPU engine, smoke and load test)
-> agent (Lagent function calling on the served model, with and without tools); every node's
manifest and contract checked; then a second run that reuses every step."""
import json
import math

import pytest
from chain_testing import TINY, fullchain

pytestmark = pytest.mark.e2e

NODES = {"data": "data", "chat_data": "data.chat", "pretrain": "pretrain", "tune": "tune",
         "eval": "eval", "deploy": "deploy", "agent": "agent"}
CONTRACTS = {"data": {"packed_corpus", "tokenizer"}, "data.chat": {"conversations", "tool_tasks"},
             "pretrain": {"megatron_checkpoint", "hf_model"}, "tune": {"hf_model"},
             "eval": {"eval_results"}, "deploy": {"deployment"}, "agent": set()}
# node -> {role: upstream node}
LINEAGE = {"chat_data": {"tokenizer": "data"}, "pretrain": {"corpus": "data"},
           "tune": {"model": "pretrain", "conversations": "chat_data"},
           "eval": {"corpus": "data", "tasks": "chat_data"}, "deploy": {"model": "tune"},
           "agent": {"endpoint": "deploy", "tasks": "chat_data"}}


def manifests(root) -> dict[str, dict]:
    out = {}
    for stage in set(NODES.values()):
        (path,) = (root / "artifacts" / stage).glob("*/manifest.json")
        manifest = json.loads(path.read_text())
        manifest["_dir"] = path.parent
        out[manifest["node"]] = manifest
    return out


def test_first_run_makes_every_artifact_with_its_contracts_and_lineage(tiny_run):
    from fullchain.core.artifact import Artifact
    from fullchain.core.contracts import read

    root, _, first = tiny_run
    assert f"{len(NODES)} step(s) ran, 0 reused" in first.stderr, first.stderr[-3000:]
    found = manifests(root)
    assert set(found) == set(NODES)
    for node, manifest in found.items():
        assert manifest["stage"] == NODES[node]
        assert set(manifest["contracts"]) == CONTRACTS[manifest["stage"]], node
        for role, upstream in LINEAGE.get(node, {}).items():
            assert manifest["inputs"][role]["node"] == upstream, (node, role)
            assert manifest["inputs"][role]["step_id"] == found[upstream]["step_id"], (node, role)
        # each contract's reader accepts the artifact (the reader validates what it reads)
        for type_name in manifest["contracts"]:
            read(Artifact.load(manifest["_dir"]), type_name)
    pre = found["pretrain"]
    assert pre["placement"] == {"world_size": 1, "accelerator": "cpu", "device_count": 0,
                                "transformer_engine": False}
    assert pre["config"]["precision"] == "fp32" and pre["config"]["transformer_impl"] == "local"
    assert pre["config"]["model"]["hidden_size"] // pre["config"]["model"]["num_attention_heads"] == 32
    assert found["data"]["environment"]["packages"]["megatron-core"]


def test_tokenizer_keeps_digits_apart_and_the_model_learned(tiny_run):
    from transformers import AutoTokenizer

    root, _, _ = tiny_run
    found = manifests(root)
    tokenizer = AutoTokenizer.from_pretrained(str(found["data"]["_dir"] / "tokenizer"))
    pieces = tokenizer.tokenize("37 * 48 = 1776")
    assert [p.lstrip("Ġ") for p in pieces if any(c.isdigit() for c in p)] == list("37481776"), pieces
    pre = found["pretrain"]["metrics"]
    # an untrained model predicts ~uniformly: perplexity ~ the (padded) vocabulary; even the CI
    # run's 60 steps take the held-out perplexity below half of that
    assert math.exp(pre["val_loss"]) < 0.5 * pre["padded_vocab_size"]
    # measured against the model's own initialisation (the demo's summary row)
    assert pre["val_perplexity"] < 0.5 * pre["init_val_perplexity"]
    tune = found["tune"]["metrics"]
    assert tune["last_loss"] < tune["first_loss"] and tune["train_dropped"] == 0
    assert tune["train_records"] == 160 and tune["eval_loss"] < tune["first_loss"]


def test_deploy_served_the_tuned_model_and_load_tested_it(tiny_run):
    root, _, _ = tiny_run
    deploy = manifests(root)["deploy"]
    metrics = deploy["metrics"]
    assert metrics["smoke_tool_calls"] >= 0 and metrics["startup_s"] > 0
    for c in (1, 8):
        assert metrics[f"bench_c{c}_output_tokens_per_s"] > 0
        assert metrics[f"bench_c{c}_latency_p50_s"] > 0
    bench = json.loads((deploy["_dir"] / "bench" / "bench.json").read_text())
    assert bench


def test_eval_scores_base_and_tuned_models_in_one_opencompass_run(tiny_run):
    from fullchain.core.contracts import read_eval_results

    root, _, _ = tiny_run
    found = manifests(root)
    manifest = found["eval"]
    assert [m["node"] for m in manifest["inputs"]["models"]] == ["pretrain", "tune"]
    assert [m["step_id"] for m in manifest["inputs"]["models"]] == [found["pretrain"]["step_id"],
                                                                      found["tune"]["step_id"]]
    assert manifest["environment"]["packages"].get("opencompass"), "eval ran outside its environment"
    scores = {(r.model, r.benchmark, r.metric): r for r in read_eval_results(manifest["_dir"]).rows}
    for model in ("pretrain", "tune"):
        bpb = scores[(model, "heldout", "bits_per_byte")]
        assert 0 < bpb.score < 16 and bpb.num_items > 0
    tool = {k: r for k, r in scores.items() if k[1].startswith("tool_use")}
    assert {(m, metric) for m, _, metric in tool} >= {("tune", "format_validity"), ("tune", "exact_expression")}
    assert all(r.num_items == 8 and 0 <= r.score <= 100 for r in tool.values())
    for name in ("results.md", "results.csv", "results.png"):
        assert (manifest["_dir"] / name).stat().st_size > 0, name


def test_agent_ran_on_the_served_model_with_and_without_tools(tiny_run):
    root, _, _ = tiny_run
    agent = manifests(root)["agent"]
    results = json.loads((agent["_dir"] / "results.json").read_text())
    rows = {(r["set"], r["mode"]): r for r in results["results"]}
    assert set(rows) == {("heldout", "tools"), ("heldout", "no_tools")}
    assert all(r["tasks"] == 4 and 0 <= r["success_rate"] <= 1 and r["server_errors"] == 0
               for r in rows.values())
    trajectories = (agent["_dir"] / "trajectories.jsonl").read_text().splitlines()
    assert len(trajectories) == 8
    assert results["protocol"] == "function_calling"


def test_chat_data_makes_the_tool_use_conversations_and_tasks(tiny_run):
    from fullchain.core.artifact import Artifact
    from fullchain.core.contracts import read_conversations, read_tool_tasks

    root, _, _ = tiny_run
    chat = manifests(root)["chat_data"]
    artifact = Artifact.load(chat["_dir"])
    conversations, tasks = read_conversations(artifact), read_tool_tasks(artifact)
    assert conversations.format == "messages"
    assert conversations.num_records["train"] + conversations.num_records["valid"] == 30000
    assert conversations.num_records["heldout"] == 100 and tasks.num_tasks == {"train": 30000, "heldout": 100}
    assert sum(not t["wording_seen"] for t in tasks.tasks("heldout")) == 50
    # 5% of the training conversations show the tool schema, 90% stop after the first call;
    # every held-out one shows the schema and the whole round trip
    train = list(conversations.records("train"))
    assert 0.035 < sum("tools" in r for r in train) / len(train) < 0.065
    assert 0.88 < sum(r["messages"][-1].get("tool_calls") is not None for r in train) / len(train) < 0.92
    heldout = list(conversations.records("heldout"))
    assert all("tools" in r and r["messages"][-1]["content"].startswith("The answer is ") for r in heldout)
    card = json.loads((chat["_dir"] / "chat_card.json").read_text())
    assert card["tokens"]["train"]["max"] <= card["seq_length"] and card["totals"]["dropped_over_length"] == 0
    assert chat["metrics"]["records"] == conversations.num_records


def test_second_run_reuses_everything_and_plan_agrees(tiny_runs):
    root, env, first, second = tiny_runs
    assert f"0 step(s) ran, {len(NODES)} reused — every step was reused" in second.stderr
    plan = fullchain("plan", *TINY, env=env).stdout
    assert f"0 to run, {len(NODES)} cached" in plan
    records = [json.loads(p.read_text()) for p in sorted((root / "runs").glob("*/run.json"))]
    ran = [r for r in records if {s["status"] for s in r["steps"]} == {"ran"}]
    reused = [r for r in records if {s["status"] for s in r["steps"]} == {"reused"}]
    ratio = reused[0]["seconds"] / ran[0]["seconds"]
    print(f"reuse ratio: {ratio:.4f} ({reused[0]['seconds']:.1f} s / {ran[0]['seconds']:.1f} s)")
    assert ratio < 0.1


def test_show_traces_the_tuned_model_back_to_the_corpus(tiny_run):
    root, env, _ = tiny_run
    tune = manifests(root)["tune"]
    out = fullchain("show", str(tune["_dir"]), env=env).stdout
    assert out.splitlines()[1].startswith("stage      tune")
    assert "pretrain" in out and "    data " in out
