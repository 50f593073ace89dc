"""Typed artifact contracts: each type's real writer feeds its real reader. The data and pretrain
types come from the demo's own run (the data stage and the HF export wrote them, the runner
recorded them in the manifests); the others from core's writers, which their stages will call.
No hand-made artifact stands in for a stage's output."""
import json

import pytest
from chain_testing import artifact_dir
from fullchain.core import contracts
from fullchain.core.artifact import Artifact
from fullchain.core.contracts import ContractError

pytestmark = pytest.mark.e2e

TOOL_TURNS = [
    {"role": "system", "content": "You can call tools."},
    {"role": "user", "content": "What is 17 * 23?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "17 * 23"}}}]},
    {"role": "tool", "content": "391"},
    {"role": "assistant", "content": "17 * 23 = 391."},
]


def test_packed_corpus_from_the_data_stage_reads_in_pretrain(tiny_run):
    root, _, _ = tiny_run
    data = Artifact.load(artifact_dir(root, "data"))
    corpus = contracts.read_packed_corpus(data)
    assert corpus.dtype == "uint16" and corpus.vocab_size <= 4096
    for split in corpus.splits.values():
        assert abs(sum(split.weights) - 1.0) < 1e-9
        for prefix, tokens in zip(split.prefixes, split.num_tokens):
            assert (data.path / f"{prefix}.bin").stat().st_size == 2 * tokens
    # the consumer's view is core's reader: pretrain's stage calls it, it does not parse on its own
    import inspect

    from fullchain.pretrain import stage as pretrain_stage

    assert "read_packed_corpus(inputs[\"corpus\"])" in inspect.getsource(pretrain_stage.run)
    assert contracts.read_packed_corpus(data.path) == corpus  # a bare directory reads the same


def test_tokenizer_and_hf_model_from_the_export_load_in_transformers(tiny_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, _, _ = tiny_run
    pretrain = Artifact.load(artifact_dir(root, "pretrain"))
    model = contracts.read_hf_model(pretrain)
    assert model.path == pretrain.path / "hf" and model.architectures == ["LlamaForCausalLM"]
    assert "<tool_call>" in model.chat_template and model.generation_config
    tokenizer = AutoTokenizer.from_pretrained(model.path)
    text = tokenizer.apply_chat_template(TOOL_TURNS, tokenize=False)
    assert "<tool_call>" in text and '"expression": "17 * 23"' in text
    assert AutoModelForCausalLM.from_pretrained(model.path).config.vocab_size >= tokenizer.vocab_size
    data = Artifact.load(artifact_dir(root, "data"))
    assert contracts.read_tokenizer(data).chat_template == model.chat_template
    checkpoint = contracts.read_megatron_checkpoint(pretrain)
    assert checkpoint.iteration == pretrain.config["schedule"]["train_iters"]


def test_a_type_the_artifact_does_not_provide_or_a_newer_version_is_refused(tiny_run, tmp_path):
    root, _, _ = tiny_run
    data = Artifact.load(artifact_dir(root, "data"))
    with pytest.raises(ContractError, match=r"the data step .* provides \['packed_corpus', "
                                            r"'tokenizer'\], not hf_model"):
        contracts.read_hf_model(data)
    newer = dict(data.manifest, contracts={"packed_corpus": {"version": 2, "path": "dataset.json"}})
    with pytest.raises(ContractError, match="packed_corpus version 2 in its manifest; this fullchain "
                                            "reads version 1"):
        contracts.read_packed_corpus(Artifact(path=data.path, manifest=newer))


def test_conversations_round_trip_and_bad_records_name_file_line_and_field(tmp_path):
    pairs = [{"prompt": TOOL_TURNS[1:2], "chosen": [{"role": "assistant", "content": "391"}],
              "rejected": [{"role": "assistant", "content": "392"}]}]
    contracts.write_conversations(tmp_path / "sft", "messages",
                                  {"train": [{"messages": TOOL_TURNS, "tools": []}] * 3,
                                   "heldout": [{"messages": TOOL_TURNS}]})
    contracts.write_conversations(tmp_path / "dpo", "preference", {"train": pairs})
    sft = contracts.read_conversations(tmp_path / "sft")
    assert sft.num_records == {"train": 3, "heldout": 1}
    assert list(sft.records("heldout"))[0]["messages"][2]["tool_calls"][0]["function"]["name"] == "calculator"
    assert contracts.read_conversations(tmp_path / "dpo").format == "preference"
    with pytest.raises(ContractError, match=r"train.jsonl:2: messages has no assistant turn"):
        contracts.write_conversations(tmp_path / "bad", "messages",
                                      {"train": [{"messages": TOOL_TURNS}, {"messages": TOOL_TURNS[:2]}]})
    (tmp_path / "sft" / "train.jsonl").write_text(
        json.dumps({"messages": TOOL_TURNS}) + "\n" + json.dumps({"messages": [{"role": "robot"}]}) + "\n")
    with pytest.raises(ContractError, match=r"train.jsonl:2: messages\[0\].role must be one of"):
        list(sft.records("train"))


def test_deployment_and_eval_results_round_trip(tmp_path):
    deployment = contracts.Deployment(engine="toy", model_name="tiny",
                                      command=["python", "-m", "server", "--port", "{port}",
                                               "--model", "{artifact}/hf"], env={"OMP_NUM_THREADS": "2"})
    contracts.write_deployment(tmp_path, deployment)
    back = contracts.read_deployment(tmp_path)
    assert back.argv("127.0.0.1", 8123)[-3:] == ["8123", "--model", f"{tmp_path}/hf"]
    assert contracts.TYPES["deployment"].service and back.health_path == "/v1/models"
    rows = [contracts.EvalRow("base", "gsm8k", "accuracy", 0.1, 8),
            contracts.EvalRow("sft", "gsm8k", "accuracy", 0.25, 8)]
    contracts.write_eval_results(tmp_path, rows)
    assert contracts.read_eval_results(tmp_path).table() == {"gsm8k": {"base": 0.1, "sft": 0.25}}
    (tmp_path / "deployment.json").write_text(json.dumps({"engine": "x", "model_name": "m", "command": []}))
    with pytest.raises(ContractError, match=r"deployment.json: key 'command' must be a non-empty list"):
        contracts.read_deployment(tmp_path)


def test_tool_tasks_round_trip_and_bad_tasks_name_file_line_and_key(tmp_path):
    tool = {"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}
    tasks = [{"id": "tool_use/heldout/00001", "question": "What is 17 times 23 plus 5?", "answer": "396",
              "expression": "(17 * 23) + 5", "wording_seen": False}]
    contracts.write_tool_tasks(tmp_path, {"train": tasks * 2, "heldout": tasks}, [tool], system="Use tools.",
                               extra={"seed": 1})
    back = contracts.read_tool_tasks(tmp_path)
    assert back.num_tasks == {"train": 2, "heldout": 1} and back.tools == [tool] and back.system == "Use tools."
    assert list(back.tasks("heldout")) == tasks
    assert contracts.TYPES["tool_tasks"].read(tmp_path).splits == back.splits
    with pytest.raises(ContractError, match=r"heldout.jsonl:1: 'answer' must be a non-empty string"):
        contracts.write_tool_tasks(tmp_path / "bad", {"heldout": [dict(tasks[0], answer=396)]}, [tool])
    with pytest.raises(ContractError, match=r"tools\[0\] must be"):
        contracts.write_tool_tasks(tmp_path / "bad", {"heldout": tasks}, [{"name": "calculator"}])
    (tmp_path / "heldout.jsonl").write_text(json.dumps({"id": "x", "question": "q", "answer": "1"}) + "\n")
    with pytest.raises(ContractError, match=r"heldout.jsonl:1: 'expression' must be a non-empty string"):
        list(back.tasks("heldout"))
