"""`fullchain chat <deploy artifact | step id | URL>`: an interactive agent session in the terminal.

A deploy artifact (a directory or a step id in the store) is served on a free port for the
session and stopped after; a URL is used as it is. Each tool call and its result is printed as
it happens (`-> calculator {"expression": "37 * 48"}` / `<- 1776`), then the answer. The
conversation carries over between turns (function calling); `/reset` starts afresh, `/exit` or
Ctrl-D ends.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from fullchain.agent.tasks import SYSTEM_PROMPT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fullchain chat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="deploy artifact dir, its step id, or a server's base URL "
                        "(http://127.0.0.1:8000/v1)")
    parser.add_argument("--protocol", choices=["function_calling", "react"], default="function_calling")
    parser.add_argument("--tools", default="calculator,python",
                        help="comma-separated: calculator, python (default: both; '' for none)")
    parser.add_argument("--model", help="model name (default: the deployment's, or the server's first)")
    parser.add_argument("--system", default=SYSTEM_PROMPT, help="system prompt")
    parser.add_argument("--max-turns", type=int, default=6, help="model replies per question")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per model reply")
    parser.add_argument("--store", help="artifact store for a step id (default: the spec's paths.store)")
    parser.add_argument("--api-key-env", default="FULLCHAIN_API_KEY")
    return parser


def _locate(target: str, store: str | None) -> Path:
    from fullchain.core import show

    if Path(target).is_dir():
        return Path(target)
    if store is None:
        from fullchain.core import spec as spec_mod

        spec = spec_mod.materialize(spec_mod.to_spec(spec_mod.compose(spec_mod.find_conf_dir(None), [])))
        store = spec["paths"]["store"]
    return Path(show.locate(target, Path(store)))


def _show_call(call) -> None:
    arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
    print(f"  -> {call.name} {arguments}", flush=True)
    if call.error:
        print(f"  <- error: {call.error}", flush=True)
    else:
        print(f"  <- {call.result}", flush=True)


def session(url: str, model: str | None, args, api_key: str | None) -> int:
    from fullchain.agent.agents import make_agent
    from fullchain.agent.llm import OpenAIChat, first_model
    from fullchain.agent.sandbox import Sandbox
    from fullchain.agent.tools import FunctionTool, SandboxedPython, calculator

    model = model or first_model(url, api_key)
    llm = OpenAIChat(url, model, api_key=api_key, max_new_tokens=args.max_tokens)
    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    unknown = sorted(set(names) - {"calculator", "python"})
    if unknown:
        print(f"fullchain chat: --tools: unknown {unknown} (calculator, python)", file=sys.stderr)
        return 2
    with Sandbox() as sandbox:
        actions = [FunctionTool(calculator) if n == "calculator" else SandboxedPython(sandbox)
                   for n in names]
        print(f"chat with {model} at {url} ({args.protocol}; tools: {', '.join(names) or 'none'}). "
              "/reset starts over, /exit ends.", flush=True)
        history = None
        while True:
            try:
                line = input("you> ")
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
            line = line.strip()
            if not line:
                continue
            if line in ("/exit", "/quit"):
                return 0
            if line == "/reset":
                history = None
                print("(conversation reset)", flush=True)
                continue
            agent = make_agent(args.protocol, llm, actions, args.max_turns, echo=_show_call)
            try:
                if args.protocol == "function_calling":
                    episode = agent.chat(line, args.system, history)
                    history = agent.messages
                else:
                    episode = agent.chat(line, args.system)
            except KeyboardInterrupt:
                print("\n(interrupted)", flush=True)
                continue
            if episode.status == "answered":
                print(f"assistant> {episode.answer}", flush=True)
            elif episode.status == "server_error":
                print(f"assistant> (the server refused: {episode.error})", flush=True)
                history = None
            else:
                print(f"assistant> (no answer after {args.max_turns} replies)", flush=True)
            print(f"  [{episode.prompt_tokens + episode.completion_tokens} tokens, "
                  f"{episode.seconds:.2f}s]", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    api_key = os.environ.get(args.api_key_env) or None
    if args.target.startswith(("http://", "https://")):
        return session(args.target.rstrip("/"), args.model, args, api_key)

    from fullchain.core import services
    from fullchain.core.contracts import read_deployment

    path = _locate(args.target, args.store).resolve()  # the serve command runs in the artifact dir
    deployment = read_deployment(path)
    print(f"starting {deployment.engine} server for {path} ...", flush=True)
    running = services.start("chat", path, path / "logs" / "chat-service", dict(os.environ), port=0)
    try:
        return session(running.url, args.model or deployment.model_name, args, api_key)
    finally:
        services.stop(running)
