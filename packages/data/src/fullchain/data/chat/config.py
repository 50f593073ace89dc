"""Configuration of the conversation-data stage `data.chat` (stdlib only: the driver validates a
spec without transformers or datatrove).

One node of this kind builds ONE conversation set: SFT conversations (`format: messages`) or
preference pairs (`format: preference`), from a mixture of files in the common chat formats and,
for SFT, the synthetic tool-use task. A DPO set is a second node with its own config (see
docs/chat_data.md). It reads only the tokenizer of the data step (for length statistics with the
real chat template), so changing anything here never changes the corpus's or pretrain's step id.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fullchain.core.contracts import Role, Stage
from fullchain.data.config import SOURCE_NAME, DecontaminationConfig

CHAT_FORMATS = ("alpaca", "sharegpt", "openai", "dpo_pairs")
# Which conversation set each input format can feed.
PRODUCES = {"alpaca": "messages", "sharegpt": "messages", "openai": "messages", "dpo_pairs": "preference"}


@dataclass
class ChatSourceConfig:
    """One file (or glob / directory) of conversations in a known format."""

    name: str
    """Short identifier; names the rows of the card and prefixes record ids (`name/file:line`)."""
    path: str = field(metadata={"hash": "content"})
    """A .json (array) or .jsonl file, a glob or a directory of them; hashed by content."""
    format: Literal["alpaca", "sharegpt", "openai", "dpo_pairs"] = "alpaca"
    """alpaca: instruction/input/output(/system/history); sharegpt: `conversations` [{from, value}]
    with function_call/observation turns and a `tools` schema; openai: `messages` [{role, content,
    tool_calls}] (+ `tools`; content may be typed parts); dpo_pairs: ShareGPT `conversations` +
    `chosen` / `rejected` turns (LLaMA-Factory's ranking format)."""
    weight: float = 1.0
    """Passes over this source in the train split after dedup: 2 repeats every record twice, 0.5
    keeps a seeded half (valid split records are never repeated)."""
    max_records: int | None = None
    """Read at most this many records (in file order), before validation and dedup."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not SOURCE_NAME.match(self.name):
            raise ValueError(f"name: {self.name!r} must match {SOURCE_NAME.pattern}")
        if not self.path:
            raise ValueError(f"path: source {self.name!r} has no path")
        if self.format not in CHAT_FORMATS:
            raise ValueError(f"format: {self.format!r} is not one of {list(CHAT_FORMATS)}")
        if not self.weight > 0:
            raise ValueError(f"weight: source {self.name!r} has weight {self.weight}, must be > 0")
        if self.max_records is not None and self.max_records < 1:
            raise ValueError(f"max_records: {self.max_records} must be >= 1 or null")


@dataclass
class ToolUseConfig:
    """The synthetic tool-use task: multi-step arithmetic and unit-conversion word problems whose
    exact answer needs the tool, as SFT conversations with tool calls and results, plus the task
    file (question, answer, expression) the agent is scored on."""

    train_tasks: int = 400
    """Tasks whose conversations go into the train (and valid) split."""
    heldout_tasks: int = 100
    """Tasks kept out of training: half of them in wordings training never saw, half in seen
    wordings with new numbers (the agent's score on each half tells memorising from generalising)."""
    heldout_wordings: int = 2
    """Wordings per problem family used only in the held-out split."""
    tool: Literal["calculator", "python"] = "calculator"
    """The tool the conversations call: `calculator` {"expression": "37 * 48"} or `python`
    {"code": "print(37 * 48)"}; the task file carries its OpenAI schema for the agent."""
    max_operand: int = 999
    """Largest operand drawn (operands are 2..max_operand; answers are exact integers)."""
    weight: float = 1.0
    """Passes over the synthetic train tasks in the train split (as for a source)."""
    schema_fraction: float = 1.0
    """Share of the training conversations that carry the tool's schema (`tools`, which the chat
    template writes into the system turn: ~280 of a ~460-token conversation with the tiny demo's
    tokenizer); the others have the system prompt alone, so SFT on them costs under half as much.
    Chosen per task by the seed; held-out conversations always carry it."""
    first_call_fraction: float = 0.0
    """Share of the training tasks whose conversation stops after the assistant's first tool call
    (system, question, call: ~40% of a whole conversation's tokens). The first call is where the
    question's operands are copied, the hard part for a small model; the later calls mostly copy
    the tool's last result. Cut conversations buy more first calls per training second; the
    whole ones still teach the round trip (result -> next call -> answer). Chosen per task by the
    seed; held-out conversations are always whole."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.first_call_fraction < 1.0:
            raise ValueError(f"first_call_fraction: {self.first_call_fraction} must be in [0, 1) (some "
                             "training conversations must show the whole round trip)")
        if not 0.0 < self.schema_fraction <= 1.0:
            raise ValueError(f"schema_fraction: {self.schema_fraction} must be in (0, 1] (some "
                             "training conversations must show the tool schema)")
        if self.train_tasks < 1 or self.heldout_tasks < 0:
            raise ValueError(f"train_tasks: {self.train_tasks} must be >= 1 (and heldout_tasks >= 0)")
        if self.heldout_wordings < 1:
            raise ValueError(f"heldout_wordings: {self.heldout_wordings} must be >= 1 (some held-out "
                             "wordings must never be trained on)")
        if self.max_operand < 12:
            raise ValueError(f"max_operand: {self.max_operand} must be >= 12")
        if not self.weight > 0:
            raise ValueError(f"weight: {self.weight} must be > 0")


@dataclass
class ChatDataConfig:
    """Conversation files + the synthetic tool-use task -> one validated, deduplicated,
    decontaminated conversation set (SFT messages or preference pairs), with a card."""

    format: Literal["messages", "preference"] = "messages"
    """messages: SFT conversations (OpenAI `messages` + `tools`); preference: DPO pairs
    (`prompt` / `chosen` / `rejected`)."""
    sources: list[ChatSourceConfig] = field(default_factory=list)
    """Conversation files, each read by its format into the canonical schema."""
    tool_use: ToolUseConfig | None = field(default_factory=ToolUseConfig)
    """The synthetic tool-use task (messages sets only); null for none."""
    valid_fraction: float = 0.05
    """Share of each source's records (by a seeded hash of the record id) in the valid split."""
    seq_length: int = 2048
    """Token budget of one training sample: records longer than this (chat template applied with
    the data step's tokenizer) are truncated or dropped, and counted."""
    over_length: Literal["truncate", "drop"] = "truncate"
    """truncate: drop whole trailing turns until the conversation fits and still ends with an
    assistant turn (dropped when even its first exchange does not fit; preference pairs are
    always dropped); drop: drop the record."""
    dedup: bool = True
    """Drop records whose normalised text (lower-cased words, CJK characters) equals an earlier
    one's, across all sources and splits (the synthetic task's held-out split wins ties)."""
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)
    """n-gram overlap with the benchmarks (the spec's `benchmarks`, as for the corpus)."""
    on_error: Literal["raise", "skip"] = "raise"
    """A bad record (missing field, no assistant turn, unknown role, tool-call arguments that are
    not JSON): raise naming file:line and the field, or skip it and count it per reason."""
    seed: int = 1234
    """Seed of the generator, the valid split and weight sampling."""

    def __post_init__(self) -> None:
        if self.format not in ("messages", "preference"):
            raise ValueError(f"format: {self.format!r} must be messages or preference")
        names = [s.name for s in self.sources] + (["tool_use"] if self.tool_use is not None else [])
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"sources: names must be unique (tool_use is taken by the synthetic "
                             f"task), repeated: {repeated}")
        for i, source in enumerate(self.sources):
            if PRODUCES[source.format] != self.format:
                raise ValueError(f"sources[{i}].format: {source.format!r} gives "
                                 f"{PRODUCES[source.format]} records, but format is {self.format!r}")
        if self.format == "preference" and self.tool_use is not None:
            raise ValueError("tool_use: the synthetic task makes SFT conversations; set it to null "
                             "for format: preference")
        if not self.sources and self.tool_use is None:
            raise ValueError("sources: no sources and no tool_use: nothing to build")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction: {self.valid_fraction} must be in [0, 1)")
        if self.seq_length < 16:
            raise ValueError(f"seq_length: {self.seq_length} must be >= 16")


def _outputs(cfg: ChatDataConfig) -> dict[str, str]:
    outputs = {"conversations": "conversations"}
    if cfg.tool_use is not None:
        outputs["tool_tasks"] = "tasks"
    return outputs


# Its own kind inside the data package (the data kind's code id excludes this sub-package): it
# reads the data step's tokenizer, provides one conversation set (tune's `conversations` role)
# and, with the synthetic task, the tool-use tasks (the agent's).
STAGE = Stage(kind="data.chat", module="fullchain.data.chat", config=ChatDataConfig, group="chat_data",
              inputs={"tokenizer": Role("tokenizer", doc="the tokenizer and chat template of the "
                                                         "data step, for length statistics")},
              outputs=_outputs,
              # it uses the data package's decontamination, config and tokenizer modules: their
              # code is part of its id (the corpus's id leaves chat/ out, not the other way round)
              code_package="fullchain.data")
