"""LMDeploy on an NVIDIA GPU: serving (TurboMind or its PyTorch engine), AWQ W4A16 and tensor
parallel. Skipped without a GPU and lmdeploy (its own environment: it pins torch<=2.12.1).
benchmarks/deploy_gpu.py runs these and the overhead benchmark in one go on a GPU machine."""
import importlib.util
import json
import os

import pytest
from deploy_testing import API_KEY, QUESTION, TOOL_ANSWER, WEATHER_TOOL, descendants, gone


def _gpus() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    _gpus() == 0 or importlib.util.find_spec("lmdeploy") is None,
    reason="needs an NVIDIA GPU and lmdeploy (a deploy environment with the lmdeploy extra)")]


def _deploy(tool_model, out, **overrides):
    from fullchain.core.contracts import read_hf_model, write_deployment
    from fullchain.deploy.config import DeployConfig
    from fullchain.deploy.engines import deployment_for
    from fullchain.deploy.lmdeploy_engine import prepare_lmdeploy

    cfg = DeployConfig(engine="lmdeploy", served_model_name="tiny-tools", startup_timeout_s=600,
                       api_key_env="FULLCHAIN_TEST_DEPLOY_KEY", **overrides)
    prepare_lmdeploy(cfg, read_hf_model(tool_model), out)
    write_deployment(out, deployment_for(cfg))
    return out


def _serve_and_call_the_tool(artifact, tmp_path):
    import openai
    from fullchain.core import services

    env = dict(os.environ, FULLCHAIN_TEST_DEPLOY_KEY=API_KEY)
    running = services.start("deploy", artifact, tmp_path / "logs", env)
    try:
        api = openai.OpenAI(base_url=running.url, api_key=API_KEY, max_retries=0, timeout=120)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=running.url, api_key="wrong", max_retries=0).models.list()
        first = api.chat.completions.create(model="tiny-tools", messages=QUESTION,
                                            tools=[WEATHER_TOOL], max_tokens=40, temperature=0)
        (call,) = first.choices[0].message.tool_calls
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        history = QUESTION + [first.choices[0].message.model_dump(exclude_none=True), TOOL_ANSWER]
        second = api.chat.completions.create(model="tiny-tools", messages=history,
                                             tools=[WEATHER_TOOL], max_tokens=40, temperature=0)
        assert second.choices[0].message.content
    finally:
        pids = [running.service.pid, *descendants(running.service.pid)]
        services.stop(running)
        assert all(gone(pid) for pid in pids)


def test_lmdeploy_serves_the_tool_model(tool_model, tmp_path):
    _serve_and_call_the_tool(_deploy(tool_model, tmp_path / "bf16"), tmp_path)


def test_lmdeploy_awq_w4a16(tool_model, tmp_path):
    artifact = _deploy(tool_model, tmp_path / "awq", quantization="awq")
    assert (artifact / "model-full").is_dir()  # the full-precision copy stays beside it
    assert json.loads((artifact / "deployment.json").read_text())["quantization"] == "awq-w4a16"
    _serve_and_call_the_tool(artifact, tmp_path)


@pytest.mark.skipif(_gpus() < 2, reason="tensor parallel needs 2 GPUs")
def test_lmdeploy_tensor_parallel_2(tool_model, tmp_path):
    _serve_and_call_the_tool(_deploy(tool_model, tmp_path / "tp2", tensor_parallel_size=2), tmp_path)
