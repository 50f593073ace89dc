"""The conversation data card: what happened to every source's records, and how long they are
with the real tokenizer and chat template. `chat_card.json` (machine-readable) and
`chat_card.md` (for people), beside the corpus's `data_card.*` in spirit."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fullchain.data.chat.config import ChatDataConfig

SPLITS = ("train", "valid", "heldout")


def build_card(cfg: ChatDataConfig, stats: dict, by_source: dict, before: dict, after: dict,
               decontamination: dict | None, task_counts: dict | None, tasks: dict, tokenizer: str,
               seconds: float) -> dict[str, Any]:
    from fullchain.data.chat.stage import TOOL_USE, length_stats

    described = {s.name: {"format": s.format, "path": s.path, "weight": s.weight,
                          "max_records": s.max_records} for s in cfg.sources}
    if cfg.tool_use is not None:
        described[TOOL_USE] = {"format": "synthetic", "path": None, "weight": cfg.tool_use.weight,
                               "max_records": None}
    sources = {}
    for name, entry in stats.items():
        counts = by_source.get(name, {})
        sources[name] = {
            **described[name],
            "read": entry["read"],
            "skipped": dict(sorted(entry["skipped"].items())),
            "deduplicated": entry["deduplicated"],
            "contaminated": entry["contaminated"],
            "truncated": entry["truncated"],
            "dropped_over_length": entry["dropped_over_length"],
            "kept": sum(counts.get(split, 0) for split in SPLITS),
            "splits": {split: counts.get(split, 0) for split in SPLITS},
            "train_after_weight": counts.get("train_weighted", 0),
            "notes": dict(sorted(entry["notes"].items())),
        }
    totals = {key: sum(s[key] for s in sources.values())
              for key in ("read", "deduplicated", "contaminated", "truncated", "dropped_over_length", "kept")}
    totals["skipped"] = sum(sum(s["skipped"].values()) for s in sources.values())
    tool_use = None
    if cfg.tool_use is not None:
        heldout = tasks.get("heldout", [])
        tool_use = {"tool": cfg.tool_use.tool, "tasks": task_counts,
                    "heldout_unseen_wordings": sum(1 for t in heldout if not t["wording_seen"]),
                    "steps": {str(k): sum(1 for t in tasks["train"] if t["steps"] == k)
                              for k in sorted({t["steps"] for t in tasks["train"]})}}
    decont = None
    if decontamination is not None:
        decont = {"ngram_size": decontamination["ngram_size"], "action": decontamination["action"],
                  "contaminated_records": decontamination["contaminated_documents"],
                  "benchmarks": {name: {k: v for k, v in b.items() if k != "documents_per_item"}
                                 for name, b in decontamination["benchmarks"].items()}}
    return {
        "format": cfg.format,
        # what the conversation set holds: the train split after source weights
        "records": {"train": sum(s["train_after_weight"] for s in sources.values()),
                    **{split: len(after.get(split, [])) for split in SPLITS[1:]}},
        "totals": totals,
        "sources": sources,
        "seq_length": cfg.seq_length,
        "over_length": cfg.over_length,
        "tokens_before": {split: length_stats(v, cfg.seq_length) for split, v in before.items()},
        "tokens": {split: length_stats(v, cfg.seq_length) for split, v in after.items()},
        "tokenizer": tokenizer,
        "decontamination": decont,
        "tool_use": tool_use,
        "seconds": round(seconds, 3),
    }


def render_markdown(card: dict) -> str:
    t = card["totals"]
    lines = ["# Conversation data card", "",
             f"Format {card['format']}: {t['read']} records read -> {t['kept']} kept "
             f"(train {card['records']['train']} after weights, valid {card['records']['valid']}, "
             f"held-out {card['records']['heldout']}); skipped {t['skipped']}, duplicates "
             f"{t['deduplicated']}, contaminated {t['contaminated']}, over {card['seq_length']} tokens: "
             f"truncated {t['truncated']}, dropped {t['dropped_over_length']}.", "",
             "## Sources", "",
             "| source | format | weight | read | skipped | dedup | contaminated | truncated | dropped "
             "(length) | kept | train / valid / held-out | train after weight |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in card["sources"].items():
        skipped = ", ".join(f"{k}: {v}" for k, v in s["skipped"].items()) or "0"
        split = " / ".join(str(s["splits"][k]) for k in SPLITS)
        lines.append(f"| {name} | {s['format']} | {s['weight']} | {s['read']} | {skipped} | "
                     f"{s['deduplicated']} | {s['contaminated']} | {s['truncated']} | "
                     f"{s['dropped_over_length']} | {s['kept']} | {split} | {s['train_after_weight']} |")
    notes = [f"{name}: " + ", ".join(f"{k} {v}" for k, v in s["notes"].items())
             for name, s in card["sources"].items() if s["notes"]]
    if notes:
        lines += ["", "Notes: " + "; ".join(notes)]
    lines += ["", f"## Tokens (chat template applied; tokenizer `{card['tokenizer']}`)", "",
              f"seq_length {card['seq_length']}, over-length records: {card['over_length']}. Distinct "
              "records, before source weights; over seq_length counted before truncating.", "",
              "| split | records | tokens | mean | p50 | p90 | p99 | max | over seq_length (before) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for split, s in card["tokens"].items():
        if s["records"]:
            over = card["tokens_before"][split].get("over_seq_length", 0)
            lines.append(f"| {split} | {s['records']} | {s['tokens']} | {s['mean']} | {s['p50']} | "
                         f"{s['p90']} | {s['p99']} | {s['max']} | {over} |")
    lines += ["", "## Decontamination", ""]
    decont = card["decontamination"]
    if decont is None:
        lines.append("No benchmarks configured.")
    else:
        lines += [f"{decont['ngram_size']}-gram overlap, action {decont['action']}: "
                  f"{decont['contaminated_records']} contaminated records.", "",
                  "| benchmark | items | too short | items found |", "|---|---|---|---|"]
        for name, b in decont["benchmarks"].items():
            lines.append(f"| {name} | {b['items']} | {b['items_too_short']} | {b['items_found']} |")
    if card["tool_use"] is not None:
        tool = card["tool_use"]
        lines += ["", "## Synthetic tool-use task", "",
                  f"tool `{tool['tool']}`; tasks {tool['tasks']}; held-out tasks in wordings never "
                  f"trained on: {tool['heldout_unseen_wordings']}; tool calls per training task: "
                  + ", ".join(f"{k}: {v}" for k, v in tool["steps"].items())]
    lines.append("")
    return "\n".join(lines)


def write_card(card: dict, out: Path) -> None:
    (out / "chat_card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "chat_card.md").write_text(render_markdown(card), encoding="utf-8")
