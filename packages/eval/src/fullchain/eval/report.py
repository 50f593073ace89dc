"""Result tables, the chart, contamination marks and `compare` (stdlib; the chart needs
matplotlib and is skipped with a log line without it). Imports nothing of OpenCompass: the main
environment reads eval artifacts with it."""
from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PIN_FIELDS = ("benchmark_file_hash", "items", "conversion_version", "template_hash", "generation",
              "mode", "engine", "opencompass_version", "model_id")
"""What a score depends on; two scores are comparable when all but `model_id` agree."""


def pins(**fields: Any) -> dict[str, Any]:
    missing = set(PIN_FIELDS) - set(fields)
    if missing:
        raise ValueError(f"pins: missing {sorted(missing)}")
    fields = dict(fields)
    # item ids can be thousands long: keep their hash (same items <=> same hash)
    fields["items"] = hashlib.sha256(json.dumps(list(fields["items"])).encode()).hexdigest()[:16]
    return {k: fields[k] for k in PIN_FIELDS}


def label(row: dict[str, Any]) -> str:
    return row["benchmark"] if row["benchmark"] == "heldout" else f"{row['benchmark']}/{row['mode']}"


# ---------------------------------------------------------------------------- contamination


def contamination(file: Path, scored: dict[str, list[str]] | None = None) -> dict[str, dict[str, Any]]:
    """Per benchmark, from the data stage's decontamination.json: items found in the corpus,
    the action (drop or flag) and `contaminated` = found and kept (flagged, not dropped). With
    `scored` ({benchmark: ids of the items scored}, ids as the data stage names them), also
    which of the scored items were found (`scored_found_ids`, `scored_found`)."""
    if not Path(file).is_file():
        return {}
    doc = json.loads(Path(file).read_text(encoding="utf-8"))
    action = doc.get("action", "drop")
    out = {}
    for name, entry in (doc.get("benchmarks") or {}).items():
        found = int(entry.get("items_found", 0))
        out[name] = {"items_found": found, "items": int(entry.get("items", 0)), "action": action,
                     "contaminated": found > 0 and action == "flag"}
        if scored is not None and name in scored:
            ids = set(entry.get("found_item_ids") or [])
            out[name]["scored_found_ids"] = [i for i in scored[name] if i in ids]
            out[name]["scored_found"] = len(out[name]["scored_found_ids"])
    return out


def _mark(benchmark: str, marks: dict[str, dict]) -> str:
    entry = marks.get(benchmark.split("/")[0])
    if not entry:
        return ""
    scored = f"; {entry['scored_found']} of them scored" if "scored_found" in entry else ""
    if entry["contaminated"]:
        return f"CONTAMINATED ({entry['items_found']} items found, kept){scored}"
    if entry["items_found"]:
        return f"{entry['items_found']} found, {'dropped' if entry['action'] == 'drop' else entry['action']}"
    return "clean"


# ---------------------------------------------------------------------------- tables


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[tuple[str, str, int]], dict]:
    """(models, [(benchmark label, metric, items)], {(label, metric): {model: score}})."""
    models: list[str] = []
    keys: list[tuple[str, str, int]] = []
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        if row["model"] not in models:
            models.append(row["model"])
        key = (label(row), row["metric"])
        if key not in cells:
            keys.append((*key, row["num_items"]))
        cells.setdefault(key, {})[row["model"]] = row["score"]
    return models, keys, cells


def write_tables(out: Path, rows: list[dict[str, Any]], marks: dict[str, dict]) -> None:
    models, keys, cells = table(rows)
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["benchmark", "metric", "items", "contamination", *models])
        for bench, metric, items in keys:
            writer.writerow([bench, metric, items, _mark(bench, marks),
                             *[_fmt(cells[(bench, metric)].get(m)) for m in models]])
    lines = ["# Evaluation results", "",
             "Scores in percent (OpenCompass), held-out perplexity and bits per byte as numbers. "
             "`/ppl`: ranked by likelihood; `/gen`: generated (chat template for chat models).", "",
             "| benchmark | metric | items | contamination | " + " | ".join(models) + " |",
             "|---|---|---|---|" + "---|" * len(models)]
    for bench, metric, items in keys:
        lines.append(f"| {bench} | {metric} | {items} | {_mark(bench, marks)} | " +
                     " | ".join(_fmt(cells[(bench, metric)].get(m)) for m in models) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def write_chart(file: Path, rows: list[dict[str, Any]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib missing: no %s", file)
        return
    models, keys, cells = table([r for r in rows if r["benchmark"] != "heldout"])
    held = [r for r in rows if r["benchmark"] == "heldout" and r["metric"] == "bits_per_byte"]
    fig, axes = plt.subplots(1, 2 if held else 1, figsize=(10 if held else 7, 4), squeeze=False)
    ax = axes[0][0]
    width = 0.8 / max(len(models), 1)
    for i, model in enumerate(models):
        xs = [j + i * width for j in range(len(keys))]
        ax.bar(xs, [cells[(b, m)].get(model, 0.0) for b, m, _ in keys], width, label=model)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels([f"{b}\n{m}" for b, m, _ in keys], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("score (%)")
    ax.legend(fontsize=7)
    if held:
        axes[0][1].bar([r["model"] for r in held], [r["score"] for r in held])
        axes[0][1].set_ylabel("held-out bits per byte (lower is better)")
    fig.tight_layout()
    fig.savefig(file, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------- compare


class NotComparable(ValueError):
    """Two eval results differ in more than the model; the message names the field."""


def load_pins(artifact: Path) -> list[dict[str, Any]]:
    file = Path(artifact) / "pins.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (not an eval artifact?)")
    return json.loads(file.read_text(encoding="utf-8"))["rows"]


def compare(artifacts: list[Path]) -> str:
    """One markdown table across eval artifacts (columns artifact:model); raises NotComparable
    naming the benchmark and field when a shared benchmark was scored differently."""
    columns: list[str] = []
    cells: dict[tuple[str, str], dict[str, float]] = {}
    reference: dict[tuple[str, str], tuple[str, dict]] = {}
    keys: list[tuple[str, str]] = []
    for artifact in artifacts:
        for row in load_pins(artifact):
            column = f"{Path(artifact).name}:{row['model']}"
            if column not in columns:
                columns.append(column)
            key = (label(row), row["metric"])
            if key in reference:
                other_column, other = reference[key]
                for name in PIN_FIELDS:
                    if name != "model_id" and other[name] != row["pins"][name]:
                        raise NotComparable(
                            f"{key[0]} ({key[1]}): {column} and {other_column} differ in {name} "
                            f"({row['pins'][name]!r} vs {other[name]!r}); not comparable")
            else:
                reference[key] = (column, row["pins"])
                keys.append(key)
    scores = {}
    for artifact in artifacts:
        results = json.loads((Path(artifact) / "results.json").read_text(encoding="utf-8"))["rows"]
        for row in results:
            scores[(f"{Path(artifact).name}:{row['model']}", row["benchmark"], row["metric"])] = row["score"]
    lines = ["| benchmark | metric | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for bench, metric in keys:
        cells[(bench, metric)] = {c: scores.get((c, bench, metric)) for c in columns}
        lines.append(f"| {bench} | {metric} | " + " | ".join(_fmt(cells[(bench, metric)][c]) for c in columns) + " |")
    return "\n".join(lines)
