"""Configuration of the data stage's last half: the tokenizer and the packed Megatron datasets.

Standard library only, so a spec can be validated without tokenizers/megatron installed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# ChatML turns (`<|im_start|>role\n...<|im_end|>\n`) with Qwen/Hermes-style tool use: the tool
# schemas go into the system turn inside <tools></tools>, an assistant's call is a JSON object
# {"name", "arguments"} inside <tool_call></tool_call>, and a tool's answer comes back in a user
# turn inside <tool_response></tool_response>. `tool_calls` may be OpenAI-shaped
# ({"type": "function", "function": {...}}) or flat ({"name", "arguments"}); arguments may be a
# dict or an already-encoded JSON string. Assistant turns (content, calls and <|im_end|>) sit in
# {% generation %} blocks, so `apply_chat_template(..., return_assistant_tokens_mask=True)` marks
# the tokens an SFT loss should train on.
CHATML_TOOLS_TEMPLATE = (
    "{%- macro turn_body(message) %}"
    "{%- if message.content %}{{- message.content }}{%- endif %}"
    "{%- if message.tool_calls %}"
    "{%- for tool_call in message.tool_calls %}"
    "{%- if tool_call.function is defined %}{%- set call = tool_call.function %}"
    "{%- else %}{%- set call = tool_call %}{%- endif %}"
    "{%- if message.content or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + call.name + '\", \"arguments\": ' }}"
    "{%- if call.arguments is string %}{{- call.arguments }}"
    "{%- else %}{{- call.arguments | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{%- endmacro %}"
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages and messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    "{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{%- elif messages and messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' and loop.first %}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.role == 'assistant' %}"
    "{%- generation %}{{- turn_body(message) }}{{- '<|im_end|>' }}{%- endgeneration %}"
    "{%- else %}{{- turn_body(message) }}{{- '<|im_end|>' }}{%- endif %}"
    "{{- '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Special tokens get the first ids, in this order, so the end-of-document id (0) is stable
# whatever the vocabulary size or corpus.
DEFAULT_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|pad|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
]


@dataclass
class TokenizerConfig:
    """Train a byte-level BPE tokenizer on the cleaned corpus, or load an existing one."""

    path: str | None = field(default=None, metadata={"hash": "content"})
    """An existing Hugging Face tokenizer directory to use as is; None = train one."""
    vocab_size: int = 32000
    """Size of the trained vocabulary, special tokens and the 256 byte tokens included."""
    min_frequency: int = 2
    """A pair is merged only if it occurs at least this often in the training text."""
    special_tokens: list[str] = field(default_factory=lambda: list(DEFAULT_SPECIAL_TOKENS))
    """Tokens that are never split; they take ids 0..n-1 in this order (trained tokenizer)."""
    eod_token: str = "<|endoftext|>"
    """End-of-document token appended to every packed document; also the HF eos_token."""
    pad_token: str = "<|pad|>"
    """Padding token (HF pad_token)."""
    bos_token: str | None = None
    """Beginning-of-sequence token (HF bos_token), None for none (GPT-style)."""
    chat_template: str = CHATML_TOOLS_TEMPLATE
    """Jinja chat template saved with the tokenizer (ChatML turns with tool calls)."""
    train_max_bytes: int = 200_000_000
    """Cap on UTF-8 bytes of training-split text used to train the tokenizer, shared across
    sources by blend weight (deterministic: documents are taken in order)."""
    model_max_length: int = 4096
    """Longest sequence the tokenizer reports as supported (HF model_max_length)."""

    def __post_init__(self) -> None:
        if self.path is None:
            if len(set(self.special_tokens)) != len(self.special_tokens):
                raise ValueError(f"special_tokens: duplicates in {self.special_tokens}")
            for name in ("eod_token", "pad_token", "bos_token"):
                token = getattr(self, name)
                if token is not None and token not in self.special_tokens:
                    raise ValueError(
                        f"{name}: {token!r} is not one of special_tokens={self.special_tokens}"
                    )
            minimum = 256 + len(self.special_tokens)
            if self.vocab_size < minimum:
                raise ValueError(
                    f"vocab_size: {self.vocab_size} is below 256 byte tokens + "
                    f"{len(self.special_tokens)} special tokens = {minimum}"
                )
        if self.min_frequency < 1:
            raise ValueError(f"min_frequency: must be >= 1, got {self.min_frequency}")
        if self.train_max_bytes <= 0:
            raise ValueError(f"train_max_bytes: must be > 0, got {self.train_max_bytes}")


@dataclass
class PackConfig:
    """How cleaned documents become Megatron .bin/.idx datasets."""

    split: str = "98,1,1"
    """train,valid,test proportions by document, e.g. "98,1,1" (normalised; 3 parts)."""
    dtype: Literal["auto", "uint16", "int32"] = "auto"
    """Token id storage: auto = uint16 when the vocabulary has fewer than 65500 ids, else int32."""
    append_eod: bool = True
    """Append the end-of-document token to every document."""
    encode_batch_size: int = field(default=2000, metadata={"hash": False})
    """Most documents per batch handed to a worker process (throughput only)."""
    encode_batch_bytes: int = field(default=2_000_000, metadata={"hash": False})
    """Most raw JSON bytes per batch: bounds a worker's memory (an Encoding holds ~100 bytes
    per token) whatever the document length (throughput only)."""
    min_document_tokens: int = 1
    """Documents with fewer tokens (before EOD) are skipped and counted in the metrics."""

    def split_fractions(self) -> tuple[float, float, float]:
        """The normalised (train, valid, test) fractions of `split`."""
        parts = [p.strip() for p in str(self.split).split(",")]
        values = [float(p) for p in parts]
        total = sum(values)
        return (values[0] / total, values[1] / total, values[2] / total)

    def __post_init__(self) -> None:
        parts = [p.strip() for p in str(self.split).split(",")]
        if len(parts) != 3:
            raise ValueError(f"split: {self.split!r} needs 3 comma-separated parts train,valid,test")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"split: {self.split!r} has a part that is not a number") from None
        if any(v < 0 for v in values) or values[0] <= 0:
            raise ValueError(f"split: {self.split!r} needs train > 0 and no negative parts")
        if self.dtype not in ("auto", "uint16", "int32"):
            raise ValueError(f"dtype: {self.dtype!r} is not one of auto, uint16, int32")
        if self.encode_batch_size < 1:
            raise ValueError(f"encode_batch_size: must be >= 1, got {self.encode_batch_size}")
        if self.encode_batch_bytes < 1:
            raise ValueError(f"encode_batch_bytes: must be >= 1, got {self.encode_batch_bytes}")
        if self.min_document_tokens < 0:
            raise ValueError(f"min_document_tokens: must be >= 0, got {self.min_document_tokens}")
