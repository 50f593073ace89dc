"""Conversations -> training rows: the chat template, the loss mask, packing, the collator.

A record's `messages` (+ `tools`) go through the tokenizer's own chat template (the data stage's
ChatML + Hermes tool-call template); its `{% generation %}` blocks mark the assistant tokens, and
only those get labels (`-100` elsewhere). Records longer than `seq_length` are truncated; one
left with no assistant token is dropped (and counted).

Packing puts several conversations into one row of `seq_length` tokens (best fit, longest
first). Each conversation keeps its own position ids (0, 1, 2, ... from its first token), and
the row is given WITHOUT an attention mask: transformers then builds a block-diagonal causal mask
from the position ids (`masking_utils.find_packed_sequence_indices`; only when the model has no
KV cache, so training runs with `use_cache=False`). The first token of each packed conversation
gets no label: it would be predicted from the previous conversation's last token.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100
"""Label of a token that is not trained on (PyTorch cross-entropy's ignore_index)."""


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


@dataclass
class TokenizedSet:
    examples: list[Example]
    records: int
    """Records read."""
    truncated: int
    """Records cut at seq_length (still used when an assistant token survived)."""
    dropped: int
    """Records with no assistant token left (after truncation): not used."""

    @property
    def trained_tokens(self) -> int:
        return sum(sum(1 for x in e.labels if x != IGNORE_INDEX) for e in self.examples)


def tokenize_conversation(tokenizer: Any, record: dict[str, Any]) -> Example:
    """One `messages` record -> input ids and labels (labels only on assistant tokens)."""
    encoded = tokenizer.apply_chat_template(
        record["messages"], tools=record.get("tools") or None, tokenize=True, return_dict=True,
        return_assistant_tokens_mask=True)
    input_ids = list(encoded["input_ids"])
    mask = list(encoded["assistant_masks"])
    labels = [token if keep else IGNORE_INDEX for token, keep in zip(input_ids, mask)]
    return Example(input_ids, labels)


def tokenize_conversations(tokenizer: Any, records: Iterable[dict[str, Any]],
                           seq_length: int) -> TokenizedSet:
    examples, count, truncated, dropped = [], 0, 0, 0
    for record in records:
        count += 1
        example = tokenize_conversation(tokenizer, record)
        if len(example.input_ids) > seq_length:
            truncated += 1
            example = Example(example.input_ids[:seq_length], example.labels[:seq_length])
        # labels[0] is never predicted (nothing precedes it): it needs a second trained token
        if not any(x != IGNORE_INDEX for x in example.labels[1:]):
            dropped += 1
            continue
        examples.append(example)
    return TokenizedSet(examples, count, truncated, dropped)


@dataclass
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]


def pack(examples: list[Example], seq_length: int) -> list[PackedRow]:
    """Best-fit-decreasing packing into rows of at most seq_length tokens (no example is split).

    Rows are returned in a fixed order (the seed-driven sampler shuffles them later)."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    rows: list[list[int]] = []
    free: list[int] = []
    for index in order:
        size = len(examples[index].input_ids)
        best = -1
        for r, space in enumerate(free):  # O(rows) per example: thousands of rows at most here
            if size <= space and (best < 0 or space < free[best]):
                best = r
        if best < 0:
            rows.append([index])
            free.append(seq_length - size)
        else:
            rows[best].append(index)
            free[best] -= size
    packed = []
    for members in rows:
        ids, labels, positions = [], [], []
        for index in members:
            example = examples[index]
            ids += example.input_ids
            labels += [IGNORE_INDEX] + example.labels[1:]
            positions += list(range(len(example.input_ids)))
        packed.append(PackedRow(ids, labels, positions))
    return packed


class Collator:
    """Rows -> a padded batch. Unpacked rows get an attention mask; packed rows (they carry
    `position_ids`) get position ids and no attention mask (see the module docstring); padding
    then continues as one more "sequence" of positions 0, 1, ... so it attends only to itself,
    and has no labels."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 1):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        packed = "position_ids" in rows[0]
        longest = max(len(r["input_ids"]) for r in rows)
        m = self.pad_to_multiple_of
        longest = -(-longest // m) * m
        ids, labels, extra = [], [], []
        for row in rows:
            pad = longest - len(row["input_ids"])
            ids.append(row["input_ids"] + [self.pad_token_id] * pad)
            labels.append(row["labels"] + [IGNORE_INDEX] * pad)
            if packed:
                extra.append(row["position_ids"] + list(range(pad)))
            else:
                extra.append([1] * len(row["input_ids"]) + [0] * pad)
        batch = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}
        batch["position_ids" if packed else "attention_mask"] = torch.tensor(extra)
        return batch


def as_rows(examples: list[Example], packed_rows: list[PackedRow] | None) -> list[dict[str, list[int]]]:
    """What the Trainer's dataset holds: plain dicts (a list is a valid map-style dataset)."""
    if packed_rows is not None:
        return [{"input_ids": r.input_ids, "labels": r.labels, "position_ids": r.position_ids}
                for r in packed_rows]
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
