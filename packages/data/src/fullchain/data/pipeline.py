"""The datatrove pipelines of the data stage and the executors that run them.

Four pipelines, in order (each one's tasks see what the previous ones wrote under `work/`):

  1. clean    (tasks)        read -> tally raw -> normalise -> PII -> language -> quality
                             -> write filtered/<rank>.jsonl -> exact + MinHash signatures
  2. buckets  (num_buckets)  MinHash LSH buckets: candidate duplicate pairs
  3. cluster  (1)            exact duplicate finder, MinHash clustering
  4. final    (tasks)        read filtered/<rank> -> dedup filter -> decontaminate -> tally final
                             -> write clean/<source>/<rank>.jsonl.gz

The same list runs on the local executor (processes on this machine), on Slurm (one array job per
pipeline, chained with afterok dependencies) or on Ray. Logs, stats and completion markers of each
pipeline live in `work/logs/<pipeline>/`; a rerun of an interrupted step skips completed tasks.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from fullchain.data.config import DataConfig, ExecutorConfig

logger = logging.getLogger(__name__)

PIPELINES = ("clean", "buckets", "cluster", "final")


def work_dirs(work: Path) -> dict[str, Path]:
    """Where each intermediate lives inside the step's artifact (`out/work`)."""
    return {
        "filtered": work / "filtered",
        "exact_sigs": work / "dedup" / "exact_sigs",
        "exact_dups": work / "dedup" / "exact_dups",
        "minhash_sigs": work / "dedup" / "minhash_sigs",
        "minhash_buckets": work / "dedup" / "minhash_buckets",
        "minhash_remove": work / "dedup" / "minhash_remove",
        "decontam_index": work / "decontam_index.npz",
        "decontam_matches": work / "decontam",
        "clean": work / "clean",
        "logs": work / "logs",
    }


def build_pipelines(cfg: DataConfig, units: list[dict], work: Path, with_decontam: bool) -> list[tuple[str, list, int]]:
    """(name, steps, tasks) for each pipeline; nothing runs here."""
    from datatrove.pipeline.dedup.exact_dedup import ExactFindDedups
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster
    from datatrove.pipeline.writers import JsonlWriter
    from fullchain.data.clean import LanguageFilter, Normalize, PiiScrubber, QualityFilter, Tally
    from fullchain.data.decontam import Decontaminate
    from fullchain.data.dedup import (
        DedupFilter,
        ExactSignatureStep,
        MinhashSignatureStep,
        RankReader,
        exact_config,
    )
    from fullchain.data.sources import SourceReader

    dirs = work_dirs(work)
    minhash = MinhashConfig(n_grams=cfg.dedup.ngram_size, num_buckets=cfg.dedup.num_buckets,
                            hashes_per_bucket=cfg.dedup.hashes_per_bucket, seed=cfg.seed)
    quality = cfg.quality
    clean = [
        SourceReader(units, on_error=cfg.on_error),
        Tally("raw"),
        Normalize(**asdict(cfg.normalize)),
        PiiScrubber(**asdict(cfg.pii)),
        LanguageFilter(**asdict(cfg.language)),
        QualityFilter(min_chars=quality.min_chars, max_chars=quality.max_chars,
                      gopher={"en": asdict(quality.en), "zh": asdict(quality.zh)},
                      repetition=asdict(quality.repetition), code=asdict(quality.code)),
        # an intermediate read back once by the final pipeline, then deleted: not worth gzip's CPU
        JsonlWriter(str(dirs["filtered"]), output_filename="${rank}.jsonl", compression=None),
    ]
    if cfg.dedup.exact:
        clean.append(ExactSignatureStep(str(dirs["exact_sigs"]), config=exact_config()))
    if cfg.dedup.near:
        clean.append(MinhashSignatureStep(str(dirs["minhash_sigs"]), config=minhash))
    pipelines: list[tuple[str, list, int]] = [("clean", clean, cfg.tasks)]
    if cfg.dedup.near:
        pipelines.append(("buckets", [MinhashDedupBuckets(str(dirs["minhash_sigs"]), str(dirs["minhash_buckets"]),
                                                          config=minhash)], cfg.dedup.num_buckets))
    cluster = []
    if cfg.dedup.exact:
        cluster.append(ExactFindDedups(str(dirs["exact_sigs"]), str(dirs["exact_dups"]), config=exact_config()))
    if cfg.dedup.near:
        cluster.append(MinhashDedupCluster(str(dirs["minhash_buckets"]), str(dirs["minhash_remove"]), config=minhash))
    if cluster:
        pipelines.append(("cluster", cluster, 1))
    final = [RankReader(str(dirs["filtered"]))]
    if cfg.dedup.exact or cfg.dedup.near:
        final.append(DedupFilter(str(dirs["exact_dups"]) if cfg.dedup.exact else None,
                                 str(dirs["minhash_remove"]) if cfg.dedup.near else None))
    if with_decontam:
        final.append(Decontaminate(str(dirs["decontam_index"]), str(dirs["decontam_matches"]),
                                   n=cfg.decontamination.ngram_size, action=cfg.decontamination.action))
    final += [Tally("final"), JsonlWriter(str(dirs["clean"]), output_filename="${source}/${rank}.jsonl.gz")]
    pipelines.append(("final", final, cfg.tasks))
    return pipelines


def make_executor(cfg: ExecutorConfig, name: str, steps: list, tasks: int, logging_dir: Path, depends=None):
    """The datatrove executor for one pipeline (LocalPipelineExecutor, SlurmPipelineExecutor or
    RayPipelineExecutor), built from our config; nothing is launched."""
    if cfg.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(steps, tasks=tasks, workers=min(cfg.workers, tasks),
                                     logging_dir=str(logging_dir), depends=depends,
                                     start_method=cfg.start_method)
    if cfg.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        slurm = cfg.slurm
        return SlurmPipelineExecutor(
            steps, tasks=tasks, time=slurm.time, partition=slurm.partition, cpus_per_task=slurm.cpus_per_task,
            mem_per_cpu_gb=slurm.mem_per_cpu_gb, qos=slurm.qos, venv_path=slurm.venv_path,
            sbatch_args=dict(slurm.sbatch_args) or None, job_name=f"fullchain-data-{name}",
            logging_dir=str(logging_dir), depends=depends,
        )
    if cfg.kind == "ray":
        from datatrove.executor import RayPipelineExecutor

        return RayPipelineExecutor(steps, tasks=tasks, logging_dir=str(logging_dir), depends=depends,
                                   cpus_per_task=cfg.ray.cpus_per_task, mem_per_cpu_gb=cfg.ray.mem_per_cpu_gb)
    raise ValueError(f"executor.kind: {cfg.kind!r} is not one of local, slurm, ray")


def build_executors(cfg: ExecutorConfig, pipelines: list[tuple[str, list, int]], logs: Path) -> list:
    """One executor per pipeline; on Slurm each depends on the previous (afterok chain)."""
    executors, previous = [], None
    for name, steps, tasks in pipelines:
        executor = make_executor(cfg, name, steps, tasks, logs / name,
                                 depends=previous if cfg.kind == "slurm" else None)
        executors.append(executor)
        previous = executor
    return executors


def run_executors(cfg: ExecutorConfig, executors: list, after_first=None) -> None:
    """Run the pipelines to completion. Local and Ray run one after the other in this process;
    Slurm submits the whole chain at once and this process waits for the last job's tasks."""
    if cfg.kind == "slurm":
        executors[-1].run()  # launches the dependencies first
        while incomplete := executors[-1].get_incomplete_ranks(skip_completed=True):
            logger.info("waiting for %d Slurm tasks of the final pipeline", len(incomplete))
            time.sleep(cfg.poll_seconds)
        return
    for index, executor in enumerate(executors):
        executor.run()
        if index == 0 and after_first is not None:
            after_first()


def merged_stats(logging_dir: Path) -> list[dict]:
    """Per pipeline step: {"name", "stats": {label: total}} summed over the tasks' stats files."""
    steps: list[dict] = []
    for file in sorted((logging_dir / "stats").glob("*.json")):
        for index, step in enumerate(json.loads(file.read_text(encoding="utf-8"))):
            if index == len(steps):
                steps.append({"name": step["name"], "stats": {}})
            target = steps[index]["stats"]
            for label, value in step.get("stats", {}).items():
                total = value.get("total", 0) if isinstance(value, dict) else value
                target[label] = target.get(label, 0) + total
    return steps
