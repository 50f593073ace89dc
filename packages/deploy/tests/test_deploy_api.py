"""The CPU engine's OpenAI API through the official `openai` client, on a real server (transformers'
server + our gateway) serving a tiny Llama trained to make one tool call."""
import asyncio
import json

import httpx
import openai
import pytest
from deploy_testing import API_KEY, CALL, FINAL, QUESTION, SERVED, TOOL_ANSWER, WEATHER_TOOL


def client(server, key=API_KEY, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=120, **kwargs)


def test_models_chat_streaming_and_completions(server):
    api = client(server)
    assert [m.id for m in api.models.list().data] == [SERVED]
    chat = api.chat.completions.create(model=SERVED, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=8)
    assert chat.model == SERVED and chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens <= 8
    chunks = list(api.chat.completions.create(model=SERVED, messages=QUESTION, tools=[WEATHER_TOOL],
                                              max_tokens=40, stream=True))
    calls = [c for chunk in chunks if chunk.choices for c in chunk.choices[0].delta.tool_calls or []]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    text = api.completions.create(model=SERVED, prompt="What is the", max_tokens=5)
    assert text.usage.completion_tokens <= 5 and isinstance(text.choices[0].text, str)


def test_tool_call_round_trip(server):
    api = client(server)
    first = api.chat.completions.create(model=SERVED, messages=QUESTION, tools=[WEATHER_TOOL],
                                        max_tokens=40)
    (call,) = first.choices[0].message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert "<tool_call>" not in (first.choices[0].message.content or "")
    # the call goes back as the assistant turn, the tool's result after it: a well-formed reply
    history = QUESTION + [{"role": "assistant", "content": "", "tool_calls": [
        {"id": call.id or "call_0", "type": "function",
         "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        TOOL_ANSWER]
    second = api.chat.completions.create(model=SERVED, messages=history, tools=[WEATHER_TOOL],
                                         max_tokens=40)
    assert second.choices[0].message.tool_calls in (None, [])
    assert second.choices[0].message.content.strip() == FINAL["content"]
    assert second.choices[0].finish_reason == "stop"


def test_without_tools_in_the_request_the_reply_is_text(tool_deployment):
    """A reply holding call markup, to a request that declared no tools, comes back as content
    (OpenAI's behaviour), not as `tool_calls` with empty content: transformers' own parsing
    functions, as the server patches them, on the deployed tokenizer (its response template)."""
    from fullchain.deploy.server import _text_without_tools
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.cli.serving import chat_completion

    _text_without_tools()
    model_dir = tool_deployment / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompt = tokenizer.apply_chat_template(QUESTION, tools=[WEATHER_TOOL], add_generation_prompt=True,
                                           tokenize=False)
    reply = tokenizer.apply_chat_template(QUESTION + [CALL], tools=[WEATHER_TOOL], tokenize=False)[len(prompt):]
    assert "<tool_call>" in reply
    ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    parse = chat_completion.parse_assistant_message
    _, _, calls = parse(tokenizer, model, ids, input_ids=prompt_ids, cleaned_content=text, tools=[WEATHER_TOOL])
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    content, _, calls = parse(tokenizer, model, ids, input_ids=prompt_ids, cleaned_content=text, tools=None)
    assert calls is None and content == reply.replace("<|im_end|>", "")
    assert chat_completion.build_response_parser(tokenizer, model, prompt_ids, tools=None) is None
    assert chat_completion.build_response_parser(tokenizer, model, prompt_ids, tools=[WEATHER_TOOL]) is not None


def test_a_tool_call_cut_off_by_max_tokens_is_text_not_a_500(server):
    for stream in (False, True):
        reply = client(server).chat.completions.create(
            model=SERVED, messages=QUESTION, tools=[WEATHER_TOOL], max_tokens=8, stream=stream)
        if stream:
            chunks = list(reply)
            assert chunks[-1].choices[0].finish_reason == "length"
            assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
        else:
            assert reply.choices[0].finish_reason == "length"
            assert not reply.choices[0].message.tool_calls
            assert reply.choices[0].message.content.startswith("<tool_call>")


def test_api_key_is_required(server):
    with pytest.raises(openai.AuthenticationError) as wrong:
        client(server, key="not-the-key").models.list()
    assert wrong.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        client(server, key="not-the-key").chat.completions.create(
            model=SERVED, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    root = server.url.removesuffix("/v1")
    assert httpx.get(root + "/health").status_code == 200  # health stays open for the runner
    assert httpx.get(server.url + "/models").status_code == 401  # no Authorization header


@pytest.mark.parametrize("body, status, names", [
    (b"{not json", 400, "not valid JSON"),
    (json.dumps({"model": SERVED, "messages": "hi"}).encode(), 400, "messages"),
    (json.dumps({"model": SERVED, "messages": [{"role": "user", "content": "hi"}],
                 "max_tokens": -1}).encode(), 400, "max_tokens: must be a positive integer"),
    (json.dumps({"model": SERVED, "messages": [{"role": "user", "content": "hi"}],
                 "max_tokens": 10**9}).encode(), 400, "limit of 64 (max_tokens)"),
    (json.dumps({"model": SERVED, "messages": [{"role": "user", "content": "word " * 1000}]}).encode(),
     400, "limit is 300 (max_prompt_tokens)"),
    (json.dumps({"model": SERVED, "messages": [{"role": "user", "content": "x" * 100_000}]}).encode(),
     413, "max_request_bytes"),
    (json.dumps({"model": SERVED, "messages": [{"role": "user", "content": "hi"}],
                 "tools": [{"type": "function"}]}).encode(), 400, "tools[0]"),
    (json.dumps({"model": SERVED, "messages": [{"role": "user", "content": "hi"}],
                 "generation_config": "{}"}).encode(), 400, "generation_config"),
], ids=["malformed-json", "messages-string", "negative-max-tokens", "huge-max-tokens",
        "long-prompt", "huge-body", "malformed-tools", "generation-config"])
def test_bad_requests_get_clear_4xx(server, body, status, names):
    answer = httpx.post(server.url + "/chat/completions", content=body, timeout=60,
                        headers={"Authorization": f"Bearer {API_KEY}",
                                 "Content-Type": "application/json"})
    assert answer.status_code == status, answer.text
    assert names in answer.json()["error"]["message"]


def test_over_long_prompt_through_the_client_names_the_limit(server):
    with pytest.raises(openai.BadRequestError) as error:
        client(server).chat.completions.create(
            model=SERVED, messages=[{"role": "user", "content": "word " * 1000}], max_tokens=4)
    assert "max_prompt_tokens" in str(error.value)


def test_engine_only_endpoints_are_not_exposed(server):
    root = server.url.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    assert httpx.post(root + "/reset", headers=headers).status_code == 404  # would unload the model
    assert httpx.post(server.url + "/responses", headers=headers, json={}).status_code == 404


def test_64_concurrent_requests_are_answered_or_refused_with_429(server):
    async def one(api: openai.AsyncOpenAI):
        try:
            reply = await api.chat.completions.create(
                model=SERVED, messages=[{"role": "user", "content": "hi"}], max_tokens=8)
            return reply.choices[0].message.role
        except openai.RateLimitError as exc:
            assert exc.status_code == 429 and "max_concurrent_requests=4" in str(exc)
            return 429

    async def burst():
        async with openai.AsyncOpenAI(base_url=server.url, api_key=API_KEY, max_retries=0,
                                      timeout=300) as api:
            return await asyncio.gather(*(one(api) for _ in range(64)))

    outcomes = asyncio.run(burst())
    assert set(outcomes) <= {"assistant", 429}
    assert outcomes.count("assistant") >= 4 and outcomes.count(429) > 0, outcomes
    # the server is still serving afterwards
    assert client(server).models.list().data[0].id == SERVED
