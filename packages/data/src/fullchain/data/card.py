"""The data card: what happened to every document, per source and per filter.

Built from the datatrove stats of the four pipelines (summed over tasks), the decontamination
summary and the tokenizer/pack metrics. Written as `data_card.json` (machine-readable),
`data_card.md` (for people) and `length_histogram.png` (document lengths before and after).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional


def stats_name(step_type: str, step_name: str) -> str:
    """The name datatrove files a step's stats under: `repr(step)`, i.e. "<type>: <name>"."""
    return f"{step_type}: {step_name}"


def _filter_steps() -> list[tuple[str, str]]:
    """(stats name, card label) of the steps whose stats follow the SourceFilter convention
    (in/out/dropped per source), in pipeline order; named from the step classes themselves."""
    from fullchain.data.clean import LanguageFilter, Normalize, QualityFilter
    from fullchain.data.decontam import Decontaminate
    from fullchain.data.dedup import DedupFilter

    steps = ((Normalize, "normalize"), (LanguageFilter, "language"), (QualityFilter, "quality"),
             (DedupFilter, "dedup"), (Decontaminate, "decontamination"))
    return [(stats_name(cls.type, cls.name), label) for cls, label in steps]


def step_stats(steps: list[dict], name: str) -> Optional[dict]:
    """The merged stats of the step whose stats name is exactly `name` (None if it did not run)."""
    for step in steps:
        if step["name"] == name:
            return step["stats"]
    return None


def _prefixed(stats: dict, prefix: str) -> dict[str, float]:
    """{rest: value} of labels `prefix/rest`."""
    return {label[len(prefix) + 1:]: value for label, value in stats.items() if label.startswith(prefix + "/")}


def filter_table(steps: list[dict], source: str) -> list[dict]:
    """Per filter: documents and characters in/out for one source, and drop reasons."""
    rows = []
    for step_name, label in _filter_steps():
        stats = step_stats(steps, step_name)
        if stats is None:
            continue
        rows.append({
            "filter": label,
            "documents_in": int(stats.get(f"in/{source}", 0)),
            "documents_out": int(stats.get(f"out/{source}", 0)),
            "characters_in": int(stats.get(f"chars_in/{source}", 0)),
            "characters_out": int(stats.get(f"chars_out/{source}", 0)),
            "dropped": {k: int(v) for k, v in sorted(_prefixed(stats, f"dropped/{source}").items())},
        })
    return rows


def tally(steps: list[dict], label: str, source: str) -> dict[str, Any]:
    from fullchain.data.clean import Tally

    stats = step_stats(steps, stats_name(Tally.type, Tally.step_name(label))) or {}
    return {
        "documents": int(stats.get(f"docs/{source}", 0)),
        "characters": int(stats.get(f"chars/{source}", 0)),
        "bytes": int(stats.get(f"bytes/{source}", 0)),
        "languages": {k: int(v) for k, v in sorted(_prefixed(stats, f"lang/{source}").items())},
        "length_bins": {int(k): int(v) for k, v in _prefixed(stats, f"lenbin/{source}").items()},
    }


def build_card(sources: list[dict], steps: list[dict], skipped_files: dict, decontamination: Optional[dict],
               tokenize: dict) -> dict[str, Any]:
    """The card as a dict. `sources`: [{name, weight, format, path}] in config order."""
    from fullchain.data.clean import PiiScrubber
    from fullchain.data.sources import SourceReader

    card_sources = {}
    for source in sources:
        name = source["name"]
        reader = step_stats(steps, stats_name(SourceReader.type, SourceReader.name)) or {}
        skipped = {k: int(v) for k, v in _prefixed(reader, f"skipped/{name}").items()}
        for reason, count in skipped_files.get(name, {}).items():
            skipped[reason] = skipped.get(reason, 0) + count
        pii_stats = step_stats(steps, stats_name(PiiScrubber.type, PiiScrubber.name)) or {}
        raw, final = tally(steps, "raw", name), tally(steps, "final", name)
        tokens = tokenize.get("tokens", {}).get(name, {})
        card_sources[name] = {
            **source,
            "skipped_records": dict(sorted(skipped.items())),
            "raw": raw,
            "filters": filter_table(steps, name),
            "pii_replaced": {k: int(v) for k, v in sorted(_prefixed(pii_stats, f"pii/{name}").items())},
            "final": final,
            "tokens": tokens,
            "documents_kept_fraction": round(final["documents"] / raw["documents"], 4) if raw["documents"] else 0.0,
        }
    dedup = {"exact_removed": 0, "near_removed": 0}
    for entry in card_sources.values():
        for row in entry["filters"]:
            if row["filter"] == "dedup":
                dedup["exact_removed"] += row["dropped"].get("exact", 0)
                dedup["near_removed"] += row["dropped"].get("near", 0)
    totals = {
        "documents_in": sum(s["raw"]["documents"] for s in card_sources.values()),
        "documents_out": sum(s["final"]["documents"] for s in card_sources.values()),
        "bytes_in": sum(s["raw"]["bytes"] for s in card_sources.values()),
        "bytes_out": sum(s["final"]["bytes"] for s in card_sources.values()),
        "skipped_records": sum(sum(s["skipped_records"].values()) for s in card_sources.values()),
        "tokens": tokenize.get("total_tokens"),
    }
    languages: dict[str, int] = {}
    for entry in card_sources.values():
        for language, count in entry["final"]["languages"].items():
            languages[language] = languages.get(language, 0) + count
    decont = None
    if decontamination is not None:
        decont = {
            "ngram_size": decontamination["ngram_size"],
            "action": decontamination["action"],
            "contaminated_documents": decontamination["contaminated_documents"],
            "benchmarks": {name: {k: v for k, v in b.items() if k not in ("documents_per_item",)}
                           for name, b in decontamination["benchmarks"].items()},
        }
    return {
        "totals": totals,
        "sources": card_sources,
        "language_mix": dict(sorted(languages.items())),
        "dedup": dedup,
        "decontamination": decont,
        "tokenizer": {k: tokenize.get(k) for k in ("vocab_size", "fertility_en", "fertility_zh", "dtype",
                                                   "fertility_characters", "tokenizer_train_bytes")},
        "tokens": tokenize.get("tokens"),
    }


def plot_histogram(card: dict, path: Path) -> None:
    """Document length histogram (log2 character bins), before and after filtering.

    Sources are side by side inside each bin (bin [2^k, 2^(k+1)) split into one slice per
    source), so no source's bar can hide behind another's: a step line drew each source's last
    bin as a bare edge, and a source's longest documents vanished under its neighbour's line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, entry in card["sources"].items()
             if entry["raw"]["length_bins"] or entry["final"]["length_bins"]]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, stage in zip(axes, ("raw", "final")):
        for position, name in enumerate(names):
            bins = card["sources"][name][stage]["length_bins"]
            exponents = sorted(bins)
            # Slice `position` of n in log space: [2^(k + i/n), 2^(k + (i+1)/n)).
            lefts = [2 ** (k + position / len(names)) for k in exponents]
            widths = [2 ** (k + (position + 1) / len(names)) - left for k, left in zip(exponents, lefts)]
            axis.bar(lefts, [bins[k] for k in exponents], width=widths, align="edge",
                     color=colors[position % len(colors)], label=name)
        axis.set_xscale("log", base=2)
        # Counts span orders of magnitude (thousands of short poems, a handful of long
        # articles): on a linear axis a bin of 1-5 documents is a sliver.
        axis.set_yscale("log")
        axis.set_xlabel("document length (characters, log2 bins)")
        axis.set_title("read" if stage == "raw" else "kept")
    axes[0].set_ylabel("documents (log scale)")
    if names:
        axes[1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def render_markdown(card: dict) -> str:
    totals = card["totals"]
    lines = ["# Data card", "",
             f"Documents: {totals['documents_in']} read -> {totals['documents_out']} kept; "
             f"bytes {totals['bytes_in']} -> {totals['bytes_out']}; tokens {totals['tokens']}; "
             f"skipped bad records {totals['skipped_records']}.", "",
             "## Sources", "",
             "| source | weight | read | kept | kept % | bytes kept | tokens (train/valid/test) | skipped |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in card["sources"].items():
        tokens = "/".join(str(s["tokens"].get(split, 0)) for split in ("train", "valid", "test"))
        lines.append(f"| {name} | {s['weight']} | {s['raw']['documents']} | {s['final']['documents']} | "
                     f"{100 * s['documents_kept_fraction']:.1f} | {s['final']['bytes']} | {tokens} | "
                     f"{s['skipped_records'] or 0} |")
    lines += ["", "## Filters (documents in -> out, reasons)", ""]
    for name, s in card["sources"].items():
        lines += [f"### {name}", "", "| filter | in | out | dropped |", "|---|---|---|---|"]
        for row in s["filters"]:
            reasons = ", ".join(f"{k}: {v}" for k, v in row["dropped"].items()) or "-"
            lines.append(f"| {row['filter']} | {row['documents_in']} | {row['documents_out']} | {reasons} |")
        if s["pii_replaced"]:
            lines.append("")
            lines.append("PII replaced: " + ", ".join(f"{k} {v}" for k, v in s["pii_replaced"].items()))
        lines.append("")
    lines += ["## Language mix (kept documents)", "",
              ", ".join(f"{k}: {v}" for k, v in card["language_mix"].items()) or "-", "",
              "## Deduplication", "",
              f"exact duplicates removed: {card['dedup']['exact_removed']}; "
              f"near duplicates removed: {card['dedup']['near_removed']}", ""]
    decont = card["decontamination"]
    lines += ["## Decontamination", ""]
    if decont is None:
        lines.append("No benchmarks configured.")
    else:
        lines.append(f"{decont['ngram_size']}-gram overlap, action {decont['action']}: "
                     f"{decont['contaminated_documents']} contaminated documents.")
        lines += ["", "| benchmark | items | too short | items found |", "|---|---|---|---|"]
        for name, b in decont["benchmarks"].items():
            lines.append(f"| {name} | {b['items']} | {b['items_too_short']} | {b['items_found']} |")
    tok = card["tokenizer"]
    lines += ["", "## Tokenizer", "",
              f"vocab {tok['vocab_size']}, fertility (tokens per character) en {tok['fertility_en']}, "
              f"zh {tok['fertility_zh']}", "", "![length histogram](length_histogram.png)", ""]
    return "\n".join(lines)


def write_card(card: dict, out: Path) -> None:
    (out / "data_card.json").write_text(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n",
                                        encoding="utf-8")
    (out / "data_card.md").write_text(render_markdown(card), encoding="utf-8")
    plot_histogram(card, out / "length_histogram.png")
