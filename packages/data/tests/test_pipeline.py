"""The datatrove pipelines end to end (without tokenization): planted exact and near duplicates
(English and Chinese) are removed and counted, distinct documents kept; planted benchmark passages
are caught and their item ids recorded; the Slurm executor is built (not submitted)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from data_testing import CHINESE, prose, write_jsonl
from fullchain.data.config import (
    BenchmarkConfig,
    DataConfig,
    DecontaminationConfig,
    QualityConfig,
    SourceConfig,
)
from fullchain.data.decontam import build_index, summarize
from fullchain.data.pipeline import build_executors, build_pipelines, merged_stats, run_executors, work_dirs
from fullchain.data.sources import plan_sources


def process(cfg: DataConfig, work: Path) -> dict[str, list[dict]]:
    """Run the four pipelines; the cleaned records per source."""
    units, _ = plan_sources(cfg.sources, cfg.tasks, cfg.on_error)
    dirs = work_dirs(work)
    with_decontam = bool(cfg.decontamination.benchmarks)
    if with_decontam:
        build_index(cfg.decontamination.benchmarks, cfg.decontamination.ngram_size, dirs["decontam_index"])
    pipelines = build_pipelines(cfg, units, work, with_decontam)
    run_executors(cfg.executor, build_executors(cfg.executor, pipelines, dirs["logs"]))
    result = {}
    for source in cfg.sources:
        records = []
        for file in sorted((dirs["clean"] / source.name).glob("*.jsonl.gz")):
            with gzip.open(file, "rt", encoding="utf-8") as handle:
                records += [json.loads(line) for line in handle]
        result[source.name] = records
    return result


def test_planted_duplicates_are_found_and_distinct_documents_kept(tmp_path):
    english = [prose(seed) for seed in range(8)]
    near_english = english[1].replace(" the ", " a ", 1) + " Then it rained."
    near_chinese = CHINESE[0].replace("桃花", "梨花")
    records = ([{"text": t} for t in english] + [{"text": english[0]}, {"text": english[0]},
               {"text": near_english}])
    write_jsonl(tmp_path / "en.jsonl", records)
    write_jsonl(tmp_path / "zh.jsonl", [{"text": CHINESE[0]}, {"text": CHINESE[1]}, {"text": near_chinese}])
    cfg = DataConfig(sources=[SourceConfig(name="en", path=str(tmp_path / "en.jsonl")),
                              SourceConfig(name="zh", path=str(tmp_path / "zh.jsonl"))],
                     quality=QualityConfig(min_chars=50))
    kept = process(cfg, tmp_path / "work")
    english_kept = [r["text"] for r in kept["en"]]
    assert len(english_kept) == 8 and set(english[2:]) <= set(english_kept)
    assert english_kept.count(english[0]) == 1
    assert (english[1] in english_kept) != (near_english in english_kept)
    chinese_kept = [r["text"] for r in kept["zh"]]
    assert len(chinese_kept) == 2 and CHINESE[1] in chinese_kept
    assert all(r["metadata"]["language"] == "zh" for r in kept["zh"])

    (dedup,) = [s for s in merged_stats(tmp_path / "work" / "logs" / "final") if s["name"].endswith("dedup filter")]
    assert dedup["stats"]["dropped/en/exact"] == 2
    assert dedup["stats"]["dropped/en/near"] == 1
    assert dedup["stats"]["dropped/zh/near"] == 1


def test_planted_benchmark_passages_are_caught(tmp_path):
    questions = [{"id": f"q{i}", "question": prose(100 + i, sentences=3)} for i in range(5)]
    write_jsonl(tmp_path / "bench.jsonl", questions)
    leaked = prose(1) + " " + questions[3]["question"] + " " + prose(2, sentences=5)
    partial = prose(3) + " " + " ".join(questions[1]["question"].split()[:14])  # 14 words: >= 13-gram
    clean = [prose(seed) for seed in range(10, 16)]
    write_jsonl(tmp_path / "train.jsonl", [{"text": t} for t in [leaked, partial] + clean])
    benchmark = BenchmarkConfig(name="bench", path=str(tmp_path / "bench.jsonl"), text_fields=["question"],
                                id_field="id")
    cfg = DataConfig(sources=[SourceConfig(name="train", path=str(tmp_path / "train.jsonl"))],
                     decontamination=DecontaminationConfig(benchmarks=[benchmark]))
    kept = process(cfg, tmp_path / "work")
    assert sorted(r["text"] for r in kept["train"]) == sorted(clean)
    dirs = work_dirs(tmp_path / "work")
    summary = summarize(dirs["decontam_index"], dirs["decontam_matches"],
                        {"bench": {"items": 5, "items_too_short": 0, "ngrams": 0}}, 13, "drop")
    assert summary["contaminated_documents"] == 2
    assert summary["benchmarks"]["bench"]["found_item_ids"] == ["q1", "q3"]


def test_flag_keeps_contaminated_documents_marked(tmp_path):
    question = prose(7, sentences=2)
    write_jsonl(tmp_path / "bench.jsonl", [{"question": question}])
    write_jsonl(tmp_path / "train.jsonl", [{"text": prose(1) + " " + question}, {"text": prose(2)}])
    cfg = DataConfig(sources=[SourceConfig(name="train", path=str(tmp_path / "train.jsonl"))],
                     decontamination=DecontaminationConfig(
                         action="flag",
                         benchmarks=[BenchmarkConfig(name="b", path=str(tmp_path / "bench.jsonl"))]))
    kept = process(cfg, tmp_path / "work")
    assert [r["metadata"].get("contaminated", False) for r in kept["train"]].count(True) == 1
    assert len(kept["train"]) == 2


def test_chinese_benchmark_matches_by_characters(tmp_path):
    write_jsonl(tmp_path / "bench.jsonl", [{"question": CHINESE[1][:40]}])
    out = tmp_path / "index.npz"
    summary = build_index([BenchmarkConfig(name="zh", path=str(tmp_path / "bench.jsonl"))], 13, out)
    assert summary["zh"]["items"] == 1 and summary["zh"]["items_too_short"] == 0
    from fullchain.data.decontam import Decontaminate

    step = Decontaminate(str(out), str(tmp_path / "m"), n=13)
    assert step.matched_items("前言。" + CHINESE[1]) == [0]
    assert step.matched_items(CHINESE[0]) == []


def test_slurm_executor_is_built_with_its_sbatch_script(tmp_path):
    from datatrove.executor import SlurmPipelineExecutor

    cfg = DataConfig(sources=[SourceConfig(name="stdlib", format="stdlib", max_documents=3)], tasks=4)
    cfg.executor.kind = "slurm"
    cfg.executor.slurm.partition = "cpu-long"
    cfg.executor.slurm.sbatch_args = {"account": "llm"}
    units, _ = plan_sources(cfg.sources, cfg.tasks, cfg.on_error)
    work = tmp_path / "work"
    pipelines = build_pipelines(cfg, units, work, with_decontam=False)
    executors = build_executors(cfg.executor, pipelines, work_dirs(work)["logs"])
    assert [type(e) for e in executors] == [SlurmPipelineExecutor] * 4
    assert [e.world_size for e in executors] == [4, 14, 1, 4]
    assert executors[1].depends is executors[0] and executors[3].depends is executors[2]
    script = executors[0].get_launch_file_contents(executors[0].get_sbatch_args(4), "launch_pickled_pipeline X")
    for expected in ("#SBATCH --partition=cpu-long", "#SBATCH --account=llm", "#SBATCH --array=0-3",
                     "#SBATCH --job-name=fullchain-data-clean", "#SBATCH --time=04:00:00"):
        assert expected in script, expected
