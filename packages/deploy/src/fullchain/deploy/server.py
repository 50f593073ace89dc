"""`python -m fullchain.deploy.server`: the CPU serving process — transformers' own OpenAI server
(`transformers serve`: its FastAPI app, handlers, tool-call parser, optional continuous
batching) with the gateway (API key, limits, concurrency cap) in front, in one uvicorn process.

The deploy artifact's `deployment.json` holds the exact command line; `fullchain serve` and the
runner start it. uvicorn stops cleanly on SIGTERM and Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from fullchain.deploy.gateway import Gateway, Limits

PAGE_SIZE = 256
"""Tokens per KV-cache page of continuous batching (transformers' default)."""


def build_app(model_dir: Path, served_model_name: str, limits: Limits, api_key: str | None,
              continuous_batching: bool, dtype: str, max_requests_per_batch: int = 0,
              quantize: str = "none"):
    """The engine's app for one pinned model, served under `served_model_name`, in the gateway.
    `quantize="int8_dynamic"` quantizes the loaded model's linear layers (`quantize.dynamic_int8`)."""
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.completion import CompletionHandler
    from transformers.cli.serving.model_manager import ModelManager
    from transformers.cli.serving.server import build_server
    from transformers.cli.serving.utils import GenerationState

    class PinnedModel(ModelManager):
        """transformers' model manager, answering to the served name for the model directory.
        (It pins a model by its path and would show the path as the model's id.)"""

        def process_model_name(self, model_id: str) -> str:
            return served_model_name if model_id == served_model_name else super().process_model_name(model_id)

        def _load_processor(self, model_id_and_revision, gguf_file=None):
            processor = super()._load_processor(self._path(model_id_and_revision), gguf_file=gguf_file)
            _tolerate_cut_tool_calls(getattr(processor, "tokenizer", processor))
            return processor

        def _load_model(self, model_id_and_revision, *args, **kwargs):
            model = super()._load_model(self._path(model_id_and_revision), *args, **kwargs)
            if quantize == "int8_dynamic":
                from fullchain.deploy.quantize import dynamic_int8

                model = dynamic_int8(model)
                layers = sum(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")
                             for m in model.modules())
                print(f"fullchain.deploy.server: {layers} linear layers quantized to int8 (PyTorch "
                      "dynamic quantization, per-channel weights)", file=sys.stderr, flush=True)
            return model

        @staticmethod
        def _path(model_id: str) -> str:
            return str(model_dir) if model_id == served_model_name else model_id

    _text_without_tools()
    manager = PinnedModel(device="cpu", dtype=dtype, continuous_batching=continuous_batching,
                          force_model=served_model_name)
    cb_config = None
    if continuous_batching:
        from transformers import ContinuousBatchingConfig

        # Sized for the gateway's cap: every admitted request can hold a full context. Left to
        # itself, transformers takes 60% of the machine's RAM for the KV cache on CPU. The batch
        # shape is what transformers derives from its workload hints in `generate_batch` (which
        # its server never gives): at most the admitted requests per batch, and a block table
        # for one full context (its fallbacks are 1024 requests and 32 blocks).
        pages = -(-limits.max_concurrent_requests * limits.context_length // PAGE_SIZE)
        blocks_per_request = -(-limits.context_length // PAGE_SIZE) + 1
        cb_config = ContinuousBatchingConfig(
            page_size=PAGE_SIZE, num_blocks=pages,
            max_requests_per_batch=max_requests_per_batch or limits.max_concurrent_requests,
            max_blocks_per_request=blocks_per_request + blocks_per_request % 2)
    state = GenerationState(continuous_batching=continuous_batching, cb_config=cb_config)
    app = build_server(manager, ChatCompletionHandler(model_manager=manager, generation_state=state),
                       completion_handler=CompletionHandler(model_manager=manager,
                                                            generation_state=state),
                       response_handler=None, transcription_handler=None, systemone_handler=None,
                       generation_state=state)
    # the loaded processor renders prompts exactly as the engine will
    _, processor = manager.load_model_and_processor(served_model_name)
    tokenizer = getattr(processor, "tokenizer", processor)

    def count_prompt_tokens(path: str, body: dict) -> int:
        if path == "/v1/completions":
            return len(tokenizer(body["prompt"])["input_ids"])
        ids = tokenizer.apply_chat_template(body["messages"], tools=body.get("tools"),
                                            add_generation_prompt=True, tokenize=True,
                                            return_dict=True)["input_ids"]
        return len(ids)

    return Gateway(app, limits, count_prompt_tokens, api_key=api_key)


def _text_without_tools() -> None:
    """A request that declares no `tools` gets its reply as text, as OpenAI answers it: transformers
    5.24 parses `<tool_call>` markup into `tool_calls` (empty content) whatever the request said,
    and a client that asked a plain question (OpenCompass in endpoint mode, on the tool-tuned demo
    model) got no text back. Both of its paths take the request's `tools`; without them they now
    take the engine's own no-template route (the text streams / returns unparsed); the returned
    text keeps markup tokens that are special tokens (`<tool_call>` in our exports)."""
    from transformers.cli.serving import chat_completion

    if getattr(chat_completion, "_fullchain_text_without_tools", False):
        return
    build_parser, parse_message = chat_completion.build_response_parser, chat_completion.parse_assistant_message

    def build_response_parser(processor, model, input_ids, tools=None):
        return build_parser(processor, model, input_ids, tools=tools) if tools else None

    def parse_assistant_message(processor, model, generated_ids, input_ids=None, cleaned_content="", tools=None):
        if not tools:  # the text as generated: markup tokens kept (they may be special), ends cut
            tokenizer = getattr(processor, "tokenizer", processor)
            text = tokenizer.decode(generated_ids, skip_special_tokens=False)
            for end in {tokenizer.eos_token, tokenizer.pad_token, "<|im_end|>", "<|endoftext|>"} - {None}:
                text = text.replace(end, "")
            return text, None, None
        return parse_message(processor, model, generated_ids, input_ids=input_ids,
                             cleaned_content=cleaned_content, tools=tools)

    chat_completion.build_response_parser = build_response_parser
    chat_completion.parse_assistant_message = parse_assistant_message
    chat_completion._fullchain_text_without_tools = True


def _tolerate_cut_tool_calls(tokenizer) -> None:
    """A reply cut off by `max_tokens` inside `<tool_call>` makes transformers 5.24's parser raise
    (the JSON is unterminated) and the server answer 500. Answer as OpenAI does instead: the text
    as content, no tool call (finish_reason stays `length`)."""
    parse = tokenizer.parse_response

    def parse_response(ids, *args, **kwargs):
        try:
            return parse(ids, *args, **kwargs)
        except ValueError:
            return {"role": "assistant", "content": tokenizer.decode(ids, skip_special_tokens=True)}

    tokenizer.parse_response = parse_response


def context_length(model_dir: Path) -> int:
    config = json.loads((model_dir / "config.json").read_text())
    return int(config.get("max_position_embeddings") or config.get("max_sequence_length") or 2048)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fullchain.deploy.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="HF model directory")
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--continuous-batching", action="store_true")
    parser.add_argument("--api-key-env", default=None,
                        help="environment variable holding the API key (unset or empty: no key)")
    parser.add_argument("--max-prompt-tokens", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--default-max-tokens", type=int, default=128)
    parser.add_argument("--max-concurrent-requests", type=int, default=16)
    parser.add_argument("--max-request-bytes", type=int, default=1 << 20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quantize", choices=("none", "int8_dynamic"), default="none",
                        help="int8_dynamic: PyTorch dynamic int8 linear layers, applied at load")
    parser.add_argument("--max-requests-per-batch", type=int, default=0,
                        help="continuous batching: requests per forward (0: --max-concurrent-requests)")
    args = parser.parse_args(argv)

    if args.threads:
        # before torch starts OpenMP: continuous batching generates in its own thread, whose
        # OpenMP team set_num_threads (a per-thread setting) in this thread would not size
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch
    import uvicorn

    if args.threads:
        torch.set_num_threads(args.threads)
    context = context_length(args.model)
    limits = Limits(max_prompt_tokens=min(args.max_prompt_tokens or context, context),
                    max_tokens=args.max_tokens, default_max_tokens=args.default_max_tokens,
                    context_length=context, max_concurrent_requests=args.max_concurrent_requests,
                    max_request_bytes=args.max_request_bytes)
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    app = build_app(args.model, args.served_model_name, limits, api_key,
                    args.continuous_batching, args.dtype, args.max_requests_per_batch, args.quantize)
    print(f"fullchain.deploy.server: {args.served_model_name} from {args.model} on "
          f"http://{args.host}:{args.port} (API key {'required' if api_key else 'off'}; limits "
          f"{limits})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
