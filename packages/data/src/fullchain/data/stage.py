"""The data stage: raw sources -> cleaned, deduplicated, decontaminated text -> tokenizer + packed
Megatron dataset -> data card.

    run(cfg, inputs, out) -> metrics

Layout of `out` (the step's artifact):
    work/clean/<source>/<rank>.jsonl.gz   cleaned documents handed to `finalize`
    work/logs/<pipeline>/                 datatrove logs, per-task stats, completion markers
    work/decontam/                        per-task contamination matches
    tokenizer/ packed/ dataset.json       written by `fullchain.data.pack.finalize`
    decontamination.json                  benchmark items found in the training data
    data_card.json data_card.md length_histogram.png
Bulky intermediates (filtered/, dedup/) are deleted once the step succeeded.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from fullchain.data.config import DataConfig

logger = logging.getLogger(__name__)


class EmptyCorpusError(ValueError):
    """Filtering removed every document of a source (the message names the filter that did)."""


def _last_filter(steps: list[dict], source: str) -> str:
    """The first filter (in pipeline order) after which `source` had no documents left."""
    from fullchain.data.card import filter_table

    for row in filter_table(steps, source):
        if row["documents_in"] > 0 and row["documents_out"] == 0:
            reasons = ", ".join(f"{k}: {v}" for k, v in row["dropped"].items())
            return f"filter '{row['filter']}' removed the last {row['documents_in']} documents ({reasons})"
    return "no documents were read"


def check_not_empty(steps: list[dict], sources: list[str], label: str) -> None:
    """Raise EmptyCorpusError naming the filter when a source has no documents after `label`."""
    from fullchain.data.card import stats_name, step_stats, tally
    from fullchain.data.clean import QualityFilter

    empty = [name for name in sources if tally(steps, label, name)["documents"] == 0] if label == "final" else []
    if label == "clean":
        quality = step_stats(steps, stats_name(QualityFilter.type, QualityFilter.name)) or {}
        empty = [name for name in sources if quality.get(f"out/{name}", 0) == 0]
    if empty:
        details = "; ".join(f"source '{name}': {_last_filter(steps, name)}" for name in empty)
        raise EmptyCorpusError(f"sources: corpus filtered down to nothing: {details}. Loosen that filter in "
                               "conf/data (or fix the input).")


def _steps(logs: Path, names: tuple[str, ...]) -> list[dict]:
    from fullchain.data.pipeline import merged_stats

    steps: list[dict] = []
    for name in names:
        if (logs / name).is_dir():
            steps += merged_stats(logs / name)
    return steps


def run(cfg: DataConfig, inputs: dict, out: Path) -> dict[str, Any]:
    from fullchain.data.card import build_card, write_card
    from fullchain.data.decontam import build_index, summarize
    from fullchain.data.pack import finalize
    from fullchain.data.pipeline import build_executors, build_pipelines, run_executors, work_dirs
    from fullchain.data.sources import plan_sources

    out = Path(out)
    work = out / "work"
    dirs = work_dirs(work)
    started = time.perf_counter()
    names = [source.name for source in cfg.sources]

    # 1. validate the inputs before any worker starts (a missing path fails in a second)
    units, skipped_files = plan_sources(cfg.sources, cfg.tasks, cfg.on_error)
    logger.info("data: %d sources, %d work units, %d datatrove tasks", len(names), len(units), cfg.tasks)

    index_summary = None
    if cfg.decontamination.benchmarks:
        index_summary = build_index(cfg.decontamination.benchmarks, cfg.decontamination.ngram_size,
                                    dirs["decontam_index"])
        logger.info("decontamination index: %s", index_summary)

    # 2. datatrove: clean -> dedup -> decontaminate (resumes completed tasks of an earlier attempt)
    pipelines = build_pipelines(cfg, units, work, with_decontam=index_summary is not None)
    executors = build_executors(cfg.executor, pipelines, dirs["logs"])
    run_executors(cfg.executor, executors,
                  after_first=lambda: check_not_empty(_steps(dirs["logs"], ("clean",)), names, "clean"))
    steps = _steps(dirs["logs"], ("clean", "final"))
    check_not_empty(steps, names, "final")
    processing_seconds = time.perf_counter() - started

    # 3. tokenizer + packing (data-tokenize's half)
    sources = []
    for source in cfg.sources:
        files = sorted((dirs["clean"] / source.name).glob("*.jsonl.gz"))
        sources.append((source.name, source.weight, files))
    tokenize = finalize(cfg.tokenizer, cfg.pack, sources, out, cfg.num_workers, cfg.seed)

    # 4. decontamination report and data card
    decontamination = None
    if index_summary is not None:
        decontamination = summarize(dirs["decontam_index"], dirs["decontam_matches"], index_summary,
                                    cfg.decontamination.ngram_size, cfg.decontamination.action)
        (out / "decontamination.json").write_text(json.dumps(decontamination, indent=2, sort_keys=True) + "\n",
                                                  encoding="utf-8")
    source_rows = [{"name": s.name, "weight": s.weight, "format": s.format, "path": s.path} for s in cfg.sources]
    card = build_card(source_rows, steps, skipped_files, decontamination, tokenize)
    write_card(card, out)

    for bulky in ("filtered", "exact_sigs", "exact_dups", "minhash_sigs", "minhash_buckets", "minhash_remove"):
        shutil.rmtree(dirs[bulky], ignore_errors=True)
    seconds = time.perf_counter() - started
    return metrics_from(card, tokenize, decontamination, processing_seconds, seconds)


def metrics_from(card: dict, tokenize: dict, decontamination: dict | None, processing_seconds: float,
                 seconds: float) -> dict[str, Any]:
    """The manifest's metrics: small, flat where possible, JSON-serialisable."""
    per_source = {}
    for name, entry in card["sources"].items():
        per_source[name] = {
            "documents_in": entry["raw"]["documents"],
            "documents_out": entry["final"]["documents"],
            "bytes_in": entry["raw"]["bytes"],
            "bytes_out": entry["final"]["bytes"],
            "skipped_records": entry["skipped_records"],
            "filters": {row["filter"]: {"in": row["documents_in"], "out": row["documents_out"]}
                        for row in entry["filters"]},
            "tokens": entry["tokens"],
        }
    metrics: dict[str, Any] = {
        "documents_in": card["totals"]["documents_in"],
        "documents_out": card["totals"]["documents_out"],
        "bytes_in": card["totals"]["bytes_in"],
        "bytes_out": card["totals"]["bytes_out"],
        "skipped_records": card["totals"]["skipped_records"],
        "exact_duplicates_removed": card["dedup"]["exact_removed"],
        "near_duplicates_removed": card["dedup"]["near_removed"],
        "language_mix": card["language_mix"],
        "sources": per_source,
        "processing_seconds": round(processing_seconds, 3),
        "seconds": round(seconds, 3),
        "megabytes_per_second": round(card["totals"]["bytes_in"] / 1e6 / seconds, 3) if seconds else None,
        "tokenize": tokenize,
    }
    if decontamination is not None:
        metrics["contaminated_documents"] = decontamination["contaminated_documents"]
        metrics["decontamination"] = {
            name: {"items": b["items"], "items_found": b["items_found"], "found_item_ids": b["found_item_ids"]}
            for name, b in decontamination["benchmarks"].items()
        }
    return metrics


__all__ = ["run", "EmptyCorpusError", "check_not_empty"]
