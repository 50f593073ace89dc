"""The conversation-data stage: chat files + the synthetic tool-use task -> one validated,
deduplicated, decontaminated conversation set with token-length statistics and a card.

    run(cfg, inputs, out) -> metrics

Layout of `out`:
    conversations/conversations.json + {train,valid,heldout}.jsonl   core's `conversations` type
    tasks/tasks.json + {train,heldout}.jsonl                          core's `tool_tasks` type (tool_use)
    decontamination.json                                              benchmark items found (if any)
    chat_card.json chat_card.md
    work/decontam_index.npz, work/decontam/                           the corpus's decontamination files

Order: read + validate every source (file:line errors) -> the synthetic task -> exact dedup ->
decontamination -> valid split -> length with the real tokenizer and chat template (truncate or
drop over `seq_length`) -> source weights -> write.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from fullchain.core.contracts import read_tokenizer, write_conversations, write_tool_tasks
from fullchain.data.chat.config import ChatDataConfig, ChatSourceConfig
from fullchain.data.chat.formats import ChatRecordError, convert, iter_json_records

logger = logging.getLogger(__name__)

TOOL_USE = "tool_use"


def source_files(source: ChatSourceConfig) -> list[Path]:
    """The .json / .jsonl files of a source (a file, a glob or a directory), sorted."""
    import glob

    path = Path(source.path)
    if any(ch in source.path for ch in "*?["):
        files = [Path(p) for p in glob.glob(source.path, recursive=True)]
    elif path.is_dir():
        files = list(path.rglob("*"))
    elif path.is_file():
        return [path]
    else:
        raise ChatRecordError(f"source {source.name!r}: path {source.path} does not exist", "missing_path")
    files = sorted(f for f in files if f.is_file() and f.name.endswith((".json", ".jsonl")))
    if not files:
        raise ChatRecordError(f"source {source.name!r}: {source.path} holds no .json or .jsonl file",
                              "missing_path")
    return files


def read_source(source: ChatSourceConfig, on_error: str, stats: dict) -> list[dict[str, Any]]:
    """Canonical records of one source, each with `id` (`name/file:line`) and `source`.
    Bad records raise (naming file:line and the field) or, with on_error=skip, are counted."""
    records: list[dict[str, Any]] = []
    notes: Counter = stats["notes"]
    for file in source_files(source):
        try:
            for line, raw, error in iter_json_records(file):
                if source.max_records is not None and stats["read"] >= source.max_records:
                    break
                stats["read"] += 1
                where = f"{file}:{line}"
                try:
                    if error is not None:
                        raise ChatRecordError(error, "invalid_json")
                    record = convert(source.format, raw, where, notes)
                except ChatRecordError as exc:
                    if on_error == "raise":
                        raise
                    stats["skipped"][exc.reason] += 1
                    continue
                records.append({"id": f"{source.name}/{file.name}:{line}", "source": source.name, **record})
        except ChatRecordError as exc:  # the file itself (empty, not UTF-8, a broken JSON array)
            if on_error == "raise":
                raise
            stats["skipped"][exc.reason] += 1
    return records


# ---------------------------------------------------------------------------- record text


def _messages_text(messages: list[dict]) -> list[str]:
    parts = []
    for message in messages:
        if message.get("content"):
            parts.append(message["content"])
        for call in message.get("tool_calls") or []:
            parts.append(json.dumps(call["function"]["arguments"], ensure_ascii=False, sort_keys=True))
    return parts


def record_text(record: dict) -> str:
    """Everything a model would read or write in a record (what dedup and decontamination see)."""
    keys = ("messages",) if "messages" in record else ("prompt", "chosen", "rejected")
    return "\n".join(part for key in keys for part in _messages_text(record[key]))


_WORD = re.compile(r"\w+")


def dedup_key(record: dict) -> str:
    """Exact-duplicate key: the record's lower-cased words (punctuation, spacing and case do not
    make two records different)."""
    words = " ".join(_WORD.findall(record_text(record).lower()))
    return hashlib.blake2b(words.encode("utf-8"), digest_size=16).hexdigest()


def in_valid(record_id: str, seed: int, fraction: float) -> bool:
    """A stable, order-free split: a seeded hash of the record id below `fraction`."""
    value = int.from_bytes(hashlib.sha256(f"{seed}:{record_id}".encode()).digest()[:8], "big")
    return value / 2**64 < fraction


# ---------------------------------------------------------------------------- lengths


class Lengths:
    """Token counts of records with the data step's tokenizer and its chat template."""

    def __init__(self, tokenizer_dir: Path, chat_template: str):
        # The fast class, not AutoTokenizer: the data step always saves a tokenizer.json, and
        # AutoTokenizer's import pulls in torch (~10 s of a ~15 s tiny step on 2 loaded cores).
        from transformers import PreTrainedTokenizerFast

        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))
        self.tokenizer.model_max_length = 1 << 62  # we measure lengths: no 'too long' warning
        self.template = chat_template

    def render(self, messages: list[dict], tools: list[dict] | None) -> str:
        return self.tokenizer.apply_chat_template(messages, tools=tools, chat_template=self.template,
                                                  tokenize=False)

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def of(self, records: list[dict]) -> list[int]:
        """Tokens of each record (a preference pair: its longer side, prompt included)."""
        texts, owners = [], []
        for i, record in enumerate(records):
            if "messages" in record:
                texts.append(self.render(record["messages"], record.get("tools")))
                owners.append(i)
            else:
                for side in ("chosen", "rejected"):
                    texts.append(self.render(record["prompt"] + record[side], record.get("tools")))
                    owners.append(i)
        lengths = [0] * len(records)
        for owner, n in zip(owners, self.count(texts)):
            lengths[owner] = max(lengths[owner], n)
        return lengths

    def truncate(self, record: dict, seq_length: int) -> tuple[dict, int] | None:
        """The record cut after its last assistant answer (no pending tool call) that fits, or None."""
        messages = record["messages"]
        for end in range(len(messages) - 1, 0, -1):
            message = messages[end]
            if message["role"] != "assistant" or message.get("tool_calls"):
                continue
            cut = messages[: end + 1]
            (n,) = self.count([self.render(cut, record.get("tools"))])
            if n <= seq_length:
                return {**record, "messages": cut}, n
        return None


def length_stats(lengths: list[int], seq_length: int) -> dict[str, Any]:
    if not lengths:
        return {"records": 0, "tokens": 0}
    ordered = sorted(lengths)

    def percentile(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"records": len(ordered), "tokens": sum(ordered), "mean": round(sum(ordered) / len(ordered), 1),
            "p50": percentile(0.5), "p90": percentile(0.9), "p99": percentile(0.99), "max": ordered[-1],
            "over_seq_length": sum(1 for n in ordered if n > seq_length)}


# ---------------------------------------------------------------------------- the stage


def _weighted(records: list[dict], weight: float, rng: random.Random) -> list[dict]:
    """`weight` passes: whole passes repeat every record, the fraction takes a seeded sample."""
    whole, fraction = int(weight), weight - int(weight)
    out = [r for _ in range(whole) for r in records]
    if fraction > 0 and records:
        out += rng.sample(records, round(fraction * len(records)))
    return out


def run(cfg: ChatDataConfig, inputs: dict, out: Path) -> dict[str, Any]:
    from fullchain.data.chat.card import build_card, write_card

    started = time.perf_counter()
    out = Path(out)
    tokenizer = read_tokenizer(inputs["tokenizer"])
    if not tokenizer.chat_template:
        raise ValueError(f"tokenizer: {tokenizer.path} has no chat template (tokenizer.chat_template)")

    # 1. read and validate; each record remembers its pool: "train" (-> train/valid) or "heldout"
    names = [s.name for s in cfg.sources] + ([TOOL_USE] if cfg.tool_use is not None else [])
    stats = {name: {"read": 0, "skipped": Counter(), "notes": Counter(), "deduplicated": 0,
                    "contaminated": 0, "truncated": 0, "dropped_over_length": 0} for name in names}
    pools: list[tuple[str, dict]] = []
    tasks: dict[str, list[dict]] = {}
    if cfg.tool_use is not None:
        from fullchain.data.chat.tool_use import conversation, generate, training_conversation

        tasks = generate(cfg.tool_use, cfg.seed)
        # held-out first: when a training record repeats a held-out one, the training copy goes
        pools += [("heldout", conversation(t, cfg.tool_use.tool)) for t in tasks["heldout"]]
        pools += [("train", training_conversation(t, cfg.tool_use, cfg.seed)) for t in tasks["train"]]
        stats[TOOL_USE]["read"] = len(tasks["train"]) + len(tasks["heldout"])
    for source in cfg.sources:
        pools += [("train", r) for r in read_source(source, cfg.on_error, stats[source.name])]
        logger.info("chat data: %s: %d records read, %d skipped", source.name,
                    stats[source.name]["read"], sum(stats[source.name]["skipped"].values()))

    # 2. exact dedup on normalised text
    if cfg.dedup:
        seen, kept = set(), []
        for pool, record in pools:
            key = dedup_key(record)
            if key in seen:
                stats[record["source"]]["deduplicated"] += 1
                continue
            seen.add(key)
            kept.append((pool, record))
        pools = kept

    # 3. decontamination against the benchmarks (the corpus's index and matcher)
    decontamination = None
    benchmarks = cfg.decontamination.benchmarks
    if benchmarks:
        from fullchain.data.decontam import Decontaminate, build_index, summarize

        n = cfg.decontamination.ngram_size
        index_path, matches = out / "work" / "decontam_index.npz", out / "work" / "decontam"
        index_summary = build_index(benchmarks, n, index_path)
        matcher = Decontaminate(str(index_path), str(matches), n, cfg.decontamination.action)
        matches.mkdir(parents=True, exist_ok=True)
        kept = []
        with open(matches / "00000.jsonl", "w", encoding="utf-8") as log:
            for pool, record in pools:
                items = matcher.matched_items(record_text(record))
                if items:
                    log.write(json.dumps({"id": record["id"], "source": record["source"], "items": items}) + "\n")
                    stats[record["source"]]["contaminated"] += 1
                    if cfg.decontamination.action == "drop":
                        continue
                    record["contaminated"] = True
                kept.append((pool, record))
        pools = kept
        decontamination = summarize(index_path, matches, index_summary, n, cfg.decontamination.action)
        (out / "decontamination.json").write_text(json.dumps(decontamination, indent=2, sort_keys=True) + "\n",
                                                  encoding="utf-8")

    # 4. splits
    splits: dict[str, list[dict]] = {"train": [], "valid": [], "heldout": []}
    for pool, record in pools:
        split = pool if pool == "heldout" else (
            "valid" if in_valid(record["id"], cfg.seed, cfg.valid_fraction) else "train")
        splits[split].append(record)

    # 5. token lengths with the real tokenizer and chat template; over-length records
    lengths_of = Lengths(tokenizer.path, tokenizer.chat_template)
    before: dict[str, list[int]] = {}
    after: dict[str, list[int]] = {}
    for split, records in splits.items():
        lengths = lengths_of.of(records)
        before[split] = lengths
        kept, kept_lengths = [], []
        for record, n in zip(records, lengths):
            if n > cfg.seq_length:
                cut = (lengths_of.truncate(record, cfg.seq_length)
                       if cfg.over_length == "truncate" and "messages" in record else None)
                if cut is None:
                    stats[record["source"]]["dropped_over_length"] += 1
                    continue
                stats[record["source"]]["truncated"] += 1
                record, n = cut
            kept.append(record)
            kept_lengths.append(n)
        splits[split], after[split] = kept, kept_lengths
    by_source = defaultdict(Counter)
    for split, records in splits.items():
        for record in records:
            by_source[record["source"]][split] += 1

    # 6. source weights (train split only), then one seeded shuffle to interleave the sources
    rng = random.Random(cfg.seed)
    weights = {s.name: s.weight for s in cfg.sources}
    if cfg.tool_use is not None:
        weights[TOOL_USE] = cfg.tool_use.weight
    train = []
    for name in names:
        train += _weighted([r for r in splits["train"] if r["source"] == name], weights[name], rng)
    rng.shuffle(train)
    splits["train"] = train
    for record in train:
        by_source[record["source"]]["train_weighted"] += 1

    # 7. write: the conversation set, the tasks (only those whose conversation was kept), the card
    written = {split: records for split, records in splits.items() if records or split != "heldout"}
    write_conversations(out / "conversations", cfg.format, written,
                        extra={"seq_length": cfg.seq_length, "sources": names})
    task_counts = None
    if cfg.tool_use is not None:
        from fullchain.data.chat.tool_use import SYSTEM_PROMPT, TOOLS, task_file_extra

        kept_ids = {r["id"] for records in splits.values() for r in records}
        task_splits = {split: [t for t in tasks[split] if t["id"] in kept_ids] for split in ("train", "heldout")}
        write_tool_tasks(out / "tasks", task_splits, [TOOLS[cfg.tool_use.tool]], system=SYSTEM_PROMPT,
                         extra=task_file_extra(cfg.tool_use, cfg.seed))
        task_counts = {split: len(v) for split, v in task_splits.items()}
    seconds = time.perf_counter() - started
    card = build_card(cfg, stats, by_source, before, after, decontamination, task_counts, tasks,
                      str(tokenizer.path), seconds)
    write_card(card, out)
    logger.info("chat data: %s records (train %d, valid %d, heldout %d) in %.1f s", cfg.format,
                len(splits["train"]), len(splits["valid"]), len(splits["heldout"]), seconds)
    return {"format": cfg.format, "records": {split: len(r) for split, r in splits.items()},
            "sources": {name: card["sources"][name]["kept"] for name in names},
            "skipped_records": card["totals"]["skipped"], "deduplicated": card["totals"]["deduplicated"],
            "contaminated": card["totals"]["contaminated"], "truncated": card["totals"]["truncated"],
            "dropped_over_length": card["totals"]["dropped_over_length"],
            "tokens_train": card["tokens"]["train"].get("tokens", 0), "tool_tasks": task_counts,
            "seconds": round(seconds, 3)}
