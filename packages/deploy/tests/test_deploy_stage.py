"""The deploy step through the real CLI (`fullchain run`, `fullchain serve`), and the pieces it
is made of: the servable copy of the model, the config's rules, the engines' commands."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_testing import WEATHER_TOOL, descendants, gone
from fullchain.core.contracts import read_deployment, read_hf_model

REPO = Path(__file__).resolve().parents[3]


def fullchain(*args, env, **kwargs):
    return subprocess.run([sys.executable, "-m", "fullchain.core.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def deployed(tool_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    env = dict(os.environ, FULLCHAIN_STORE=str(root / "artifacts"), FULLCHAIN_RUNS=str(root / "runs"),
               FULLCHAIN_CACHE=str(root / "cache"))
    result = fullchain("run", "stages=[deploy]", "env=current", "~graph.deploy.inputs.model",
                       f"deploy.model_path={tool_model}", "deploy.served_model_name=tiny-tools",
                       env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (manifest,) = (root / "artifacts" / "deploy").glob("*/manifest.json")
    return manifest.parent, env, result


def test_the_step_writes_a_deployment_and_smoke_tests_it(deployed, tool_model):
    path, _, result = deployed
    manifest = json.loads((path / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert manifest["contracts"] == {"deployment": {"version": 1, "path": "."}}
    assert metrics["engine"] == "transformers" and metrics["served_model_name"] == "tiny-tools"
    assert 0 < metrics["startup_s"] < 300 and 0 < metrics["smoke_chat_latency_s"] < 60
    # the trained model answers the smoke test's weather question with its one tool call
    assert metrics["smoke_tool_calls"] == 1 and metrics["smoke_tool_finish_reason"] == "tool_calls"
    deployment = read_deployment(path)
    assert deployment.source_model == str(tool_model) and deployment.quantization == "none"
    assert {"{host}", "{port}", "{artifact}/model"} <= set(deployment.command)
    assert deployment.command[0] == sys.executable  # the step environment's interpreter
    read_hf_model(path / "model")  # the servable copy is itself a valid hf_model
    assert not list((path / ".fullchain").glob("service-*.json")), "the smoke-test server's pid file is left"
    assert "serving http://127.0.0.1:" not in result.stderr  # the runner started nothing: no dependent


def test_the_runner_serves_the_deployment_to_a_failing_dependent_and_still_stops_it(deployed, tool_model):
    path, env, _ = deployed
    env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                             env.get("PYTHONPATH")])))
    result = fullchain("run", "stages=[deploy,client]", "env=current", "~graph.deploy.inputs.model",
                       f"deploy.model_path={tool_model}", "deploy.served_model_name=tiny-tools",
                       "+graph.client={module: deploy_toy_client, inputs: {endpoint: deploy}}",
                       "+client.fail=true", env=env)
    assert result.returncode == 1 and "deploy client failure requested" in result.stderr
    assert "deploy    serving http://127.0.0.1:" in result.stderr and "server stopped" in result.stderr
    (record,) = path.parent.parent.glob("deploy_client/*/server.json")
    record = json.loads(record.read_text())
    assert record["finish_reason"] in ("stop", "length")
    assert gone(record["pid"], within=5), "the server outlived the failed run"
    assert not list((path / ".fullchain").glob("service-*.json"))


def test_fullchain_serve_runs_in_the_foreground_and_ctrl_c_stops_it(deployed):
    path, env, _ = deployed
    env = dict(env, FULLCHAIN_API_KEY="k-123")  # the deployment's default api_key_env
    serve = subprocess.Popen([sys.executable, "-m", "fullchain.core.cli", "serve", str(path),
                              "deploy.port=0"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = serve.stdout.readline()  # blocks until the readiness line (or exit)
        assert line.startswith("fullchain serve: ready http://127.0.0.1:"), serve.stderr.read()
        assert " model tiny-tools " in line and "API key required" in line
        url = line.split()[3]
        import openai

        api = openai.OpenAI(base_url=url, api_key="k-123", max_retries=0, timeout=60)
        assert [m.id for m in api.models.list().data] == ["tiny-tools"]
        # the load test against the running URL (API key from the same variable)
        bench = fullchain("deploy", "bench", url, "--model", "tiny-tools", "--concurrency", "1,2",
                          "--duration", "3", "--max-requests", "4", "--max-tokens", "8",
                          "--out", str(path.parent / "bench"), env=env)
        assert bench.returncode == 0, bench.stderr[-2000:]
        rows = json.loads((path.parent / "bench" / "bench.json").read_text())["rows"]
        assert [r["concurrency"] for r in rows] == [1, 2]
        assert all(r["requests"] >= 1 and r["errors"] == 0 and r["output_tokens_per_s"] > 0 for r in rows)
        assert (path.parent / "bench" / "latency_vs_concurrency.png").stat().st_size > 1000
        assert "output_tokens_per_s" in bench.stdout  # the table on screen
        server_pids = descendants(serve.pid)
        assert server_pids, "no server process under fullchain serve"
        serve.send_signal(signal.SIGINT)  # what Ctrl-C delivers (the server has its own session)
        assert serve.wait(timeout=120) == 0  # a bound, not a speed check
        assert "SIGINT: stopping the server" in serve.stderr.read()
        assert all(gone(pid, within=5) for pid in server_pids), f"left behind: {server_pids}"
        assert not list((path / ".fullchain").glob("service-*.json"))
    finally:
        if serve.poll() is None:
            serve.kill()


def test_serve_refuses_config_changes_to_a_built_artifact(deployed):
    path, env, _ = deployed
    result = fullchain("serve", str(path), "deploy.max_tokens=4", env=env)
    assert result.returncode == 2 and "rebuild it" in result.stderr


def test_the_servable_copy_adds_the_tool_parser_and_end_of_turn_without_touching_the_source(
        tool_model, tmp_path):
    from fullchain.deploy.prepare import HERMES_RESPONSE_TEMPLATE, stage_model

    before = {name: (tool_model / name).read_text() for name in
              ("tokenizer_config.json", "generation_config.json")}
    changes = stage_model(read_hf_model(tool_model), tmp_path / "model")
    assert set(changes) == {"response_template", "eos_token_id"}
    for name, text in before.items():  # hard links: the source must not change through them
        assert (tool_model / name).read_text() == text
    config = json.loads((tmp_path / "model" / "tokenizer_config.json").read_text())
    assert config["response_template"] == HERMES_RESPONSE_TEMPLATE
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    eos = json.loads((tmp_path / "model" / "generation_config.json").read_text())["eos_token_id"]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in eos
    # the template parses what the chat template renders for an assistant tool call
    text = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
            "<|im_end|>")
    parsed = tokenizer.parse_response(tokenizer(text)["input_ids"], prefix="")
    assert parsed["tool_calls"] == [{"type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}]


def test_config_rules():
    from fullchain.core.placement import Placement
    from fullchain.deploy.config import DeployConfig

    cpu = Placement(world_size=1, accelerator="cpu", device_count=0, transformer_engine=False)
    with pytest.raises(ValueError, match="engine: lmdeploy serves on NVIDIA GPUs only"):
        DeployConfig(engine="lmdeploy").resolve(cpu)
    with pytest.raises(ValueError, match="need engine=lmdeploy"):
        DeployConfig(quantization="awq")
    with pytest.raises(ValueError, match="int8 is the transformers engine's"):
        DeployConfig(engine="lmdeploy", quantization="int8")
    with pytest.raises(ValueError, match="int8_dynamic is the transformers engine's"):
        DeployConfig(engine="lmdeploy", quantization="int8_dynamic")
    with pytest.raises(ValueError, match="dtype: bf16 with quantization=int8_dynamic"):
        DeployConfig(quantization="int8_dynamic", dtype="bf16")
    with pytest.raises(ValueError, match="default_max_tokens: 600 exceeds max_tokens"):
        DeployConfig(default_max_tokens=600)
    gpu = Placement(world_size=1, accelerator="cuda", device_count=1, transformer_engine=False)
    cfg = DeployConfig(engine="lmdeploy", quantization="awq", kv_cache_int8=True)
    cfg.resolve(gpu)
    assert cfg.dtype == "bf16"


def deploy_quantized(tool_model: Path, tmp_path: Path, quantization: str) -> tuple[Path, dict]:
    """`fullchain run stages=[deploy]` of the trained tool model with `deploy.quantization`; the
    step must succeed and its smoke test's tool call come back as `tool_calls`. Returns the
    manifest's path and its metrics."""
    env = dict(os.environ, FULLCHAIN_STORE=str(tmp_path / "artifacts"), FULLCHAIN_RUNS=str(tmp_path / "runs"),
               FULLCHAIN_CACHE=str(tmp_path / "cache"))
    result = fullchain("run", "stages=[deploy]", "env=current", "~graph.deploy.inputs.model",
                       f"deploy.model_path={tool_model}", f"deploy.quantization={quantization}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (manifest,) = (tmp_path / "artifacts" / "deploy").glob("*/manifest.json")
    metrics = json.loads(manifest.read_text())["metrics"]
    assert metrics["smoke_tool_calls"] == 1 and metrics["smoke_tool_finish_reason"] == "tool_calls"
    return manifest, metrics


def test_int8_deployment_quantizes_linear_weights_serves_tool_calls_and_keeps_the_source(
        tool_model, tmp_path):
    """deploy.quantization=int8 through the real CLI: torchao int8 weight-only linear layers, loaded
    by the same server, which still answers the trained tool call; the source model (hard-linked
    into the staged copy) is unchanged, and the deployment links back to it."""
    import hashlib
    import struct

    def digests(folder):
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir() if f.is_file()}

    before = digests(tool_model)
    manifest, metrics = deploy_quantized(tool_model, tmp_path, "int8")
    assert metrics["quantization"] == "int8-weight-only (torchao)"
    assert metrics["weights_bytes_quantized"] < 0.75 * metrics["weights_bytes_full"]
    deployment = read_deployment(manifest.parent)
    assert deployment.quantization == "int8-weight-only (torchao)"
    assert deployment.source_model == str(tool_model)
    assert digests(tool_model) == before, "quantizing wrote through a hard link into the source"
    model_dir = manifest.parent / "model"
    assert "quant_method" in json.loads((model_dir / "config.json").read_text())["quantization_config"]
    raw = (model_dir / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    dtypes = {name: entry["dtype"] for name, entry in header.items() if name != "__metadata__"}
    # torchao stores a linear weight as int8 data + float scales; norms and embeddings stay float
    assert dtypes["model.layers.0.mlp.up_proj._weight_qdata"] == "I8", dtypes
    assert dtypes["model.layers.0.input_layernorm.weight"] == "F32"


def test_int8_dynamic_quantizes_every_linear_layer_and_keeps_the_greedy_choice(tool_model):
    """The translation alone, on the trained tool model: no float nn.Linear is left (the output
    layer included; embeddings and norms stay float), and the quantized model picks the same
    next token as the fp32 one at nearly every position of a tool-use conversation."""
    import torch
    from fullchain.deploy.quantize import dynamic_int8
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tool_model)
    full = AutoModelForCausalLM.from_pretrained(tool_model).eval()
    linear = sum(type(m) is torch.nn.Linear for m in full.modules())
    quantized = dynamic_int8(AutoModelForCausalLM.from_pretrained(tool_model).eval())
    assert not any(type(m) is torch.nn.Linear for m in quantized.modules())
    assert sum(type(m).__name__ == "Linear" and "quantized.dynamic" in type(m).__module__
               for m in quantized.modules()) == linear
    assert type(quantized.get_input_embeddings()) is torch.nn.Embedding
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the weather in Paris?"}],
                                        tools=[WEATHER_TOOL], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.inference_mode():
        agree = (full(ids).logits.argmax(-1) == quantized(ids).logits.argmax(-1)).float().mean().item()
    assert agree >= 0.9, agree
    with pytest.raises(ValueError, match="needs the model in fp32"):
        dynamic_int8(AutoModelForCausalLM.from_pretrained(tool_model, dtype=torch.bfloat16))


def test_int8_dynamic_deployment_serves_tool_calls_from_the_unchanged_weights(tool_model, tmp_path):
    """deploy.quantization=int8_dynamic through the real CLI: the artifact keeps the source's
    weights (hard links, nothing rewritten), the serve command asks the server to quantize as it
    loads (fp32), the server says how many layers it quantized, and the quantized engine still
    answers the smoke test's tool call."""
    import hashlib

    from transformers import AutoConfig

    manifest, metrics = deploy_quantized(tool_model, tmp_path, "int8_dynamic")
    assert metrics["quantization"] == "int8-dynamic (PyTorch, applied at load)"
    deployment = read_deployment(manifest.parent)
    assert deployment.source_model == str(tool_model)
    command = " ".join(deployment.command)
    assert "--quantize int8_dynamic" in command and "--dtype float32" in command
    weights = manifest.parent / "model" / "model.safetensors"
    assert hashlib.sha256(weights.read_bytes()).digest() == \
        hashlib.sha256((tool_model / "model.safetensors").read_bytes()).digest()
    log = (manifest.parent / "logs" / "service" / "service.stderr.log").read_text()
    layers = AutoConfig.from_pretrained(tool_model).num_hidden_layers * 7 + 1  # q k v o gate up down + lm_head
    assert f"{layers} linear layers quantized to int8" in log, log[-2000:]


def test_lmdeploy_command_carries_the_settings():
    from fullchain.deploy.config import DeployConfig
    from fullchain.deploy.engines import deployment_for

    deployment = deployment_for(DeployConfig(engine="lmdeploy", tensor_parallel_size=2, dtype="bf16",
                                             quantization="awq", kv_cache_int8=True,
                                             served_model_name="m"), python="/env/bin/python")
    command = " ".join(deployment.command)
    assert command.startswith("/env/bin/python -m fullchain.deploy.lmdeploy_launch --api-key-env ")
    for part in ("--tp 2", "--model-format awq", "--quant-policy 8", "--dtype bfloat16",
                 "--model-name m", "--server-port {port}", "--tool-call-parser qwen"):
        assert part in command
    assert deployment.quantization == "awq-w4a16"
