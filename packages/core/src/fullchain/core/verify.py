"""`fullchain verify <artifact | step id>`: re-execute a step, compare payload checksums.

The step is planned again from its run's resolved spec (`<run>/spec.yaml`, the manifest's
`run`), with the store set to the one holding the artifact. Planning recomputes the step id
from today's code and config, so a step whose code has changed since is refused: verify checks
that the same request reproduces the same bytes, not that new code gives old results. The
step is then launched by the runner's own functions (same request, same environment and
launcher, same input artifacts, the same services started for serve roles) into a scratch
directory, and the worker records the re-execution's checksums exactly as it did the
original's.

Each payload file (artifact.payload_files: everything but `.fullchain/`, `logs/`,
`tensorboard/` and the manifest) is compared by sha256. Where the bytes differ, one stated
rule may still call the file reproduced, and the table names the rule:

- `path`: the bytes are equal once the scratch directory's path is written back as the
  original's (a stage that records its own output path: datatrove's `metadata.file_path`,
  torch's checkpoint id, a card listing its files).
- `gzip`: the decompressed contents are equal (after `path`); the gzip header stamps the time
  the file was written.
- `timing`: a JSON or JSONL file is equal with its wall-clock keys left out (TIMING_KEY:
  `*_time`, `*runtime`, `*seconds`, `*_s`, `*per_second*`, `mfu`, `*_at`), every other value
  exact.
- `chart of <x>.json`: a PNG whose bytes differ counts as reproduced when a JSON file in the
  same directory does (by the rules above): the chart is drawn from it, and charts of wall-clock
  measurements (deploy's `bench/latency_vs_concurrency.png`) differ with every run.
- `dcp-metadata`: a torch distributed checkpoint's `.metadata` is equal with its
  `storage_meta` left out (it holds a random `save_id` and the checkpoint's path); the tensor
  shards (`*.distcp`) themselves are compared by bytes.

Anything else that differs is a mismatch. Exit status 0 only when every file matches.
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import re
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fullchain.core.artifact import ArtifactError, file_sha256, payload_checksums, read_manifest
from fullchain.core.config import ConfigError

log = logging.getLogger("fullchain")

TIMING_KEY = re.compile(r"(_time|runtime|seconds|_s|_at)$|per_second|^mfu$")
"""Keys whose values are wall-clock measurements, left out by the `timing` rule."""


# ---------------------------------------------------------------------------------------------
# comparison

def _drop_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_timing(v) for k, v in value.items() if not TIMING_KEY.search(str(k))}
    if isinstance(value, list):
        return [_drop_timing(v) for v in value]
    return value


def _json_values(data: bytes, name: str) -> list[Any]:
    text = data.decode("utf-8")
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return [json.loads(text)]


def _dcp_metadata_equal(original: Path, rerun: Path) -> bool:
    import dataclasses
    import pickle

    def load(path: Path):
        with open(path, "rb") as handle:
            meta = pickle.load(handle)  # torch's own format: FileSystemReader.read_metadata
        return dataclasses.replace(meta, storage_meta=None) if hasattr(meta, "storage_meta") else meta

    return load(original) == load(rerun)


def compare_file(rel: str, original: Path, rerun: Path, original_root: Path,
                 rerun_root: Path) -> tuple[bool, str]:
    """(reproduced, how): 'bytes', or the rule that made them equal, or why not."""
    a, b = original / rel, rerun / rel
    if file_sha256(a) == file_sha256(b):
        return True, "bytes"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    path_a, path_b = str(original_root).encode(), str(rerun_root).encode()
    rules = []
    norm_b = data_b.replace(path_b, path_a)
    if norm_b != data_b:
        rules.append("path")
        if norm_b == data_a:
            return True, "path"
    if rel.endswith(".gz"):
        try:
            data_a, plain_b = gzip.decompress(data_a), gzip.decompress(data_b)
        except (OSError, EOFError) as exc:
            return False, f"not gzip ({exc})"
        norm_b = plain_b.replace(path_b, path_a)
        rules = ["gzip"] + (["path"] if norm_b != plain_b else [])
        if data_a == norm_b:
            return True, "+".join(rules)
        rel = rel[:-3]
    if rel.endswith((".json", ".jsonl")):
        try:
            values_a, values_b = _json_values(data_a, rel), _json_values(norm_b, rel)
        except (UnicodeDecodeError, ValueError) as exc:
            return False, f"unparseable JSON ({exc})"
        if values_a == values_b:
            return True, "+".join(rules + ["json"])
        if _drop_timing(values_a) == _drop_timing(values_b):
            return True, "+".join(rules + ["timing"])
        return False, "values differ"
    if rel.endswith(".png"):
        # A chart of measurements (deploy's bench/latency_vs_concurrency.png) differs with
        # every run; it is drawn from the JSON beside it, so it counts as reproduced when that
        # JSON does, wall-clock keys aside, and the JSON is in the table with its own result.
        for sibling in sorted(a.parent.glob("*.json")):
            rel_json = str(Path(rel).parent / sibling.name)
            if (b.parent / sibling.name).is_file() and compare_file(
                    rel_json, original_root, rerun_root, original_root, rerun_root)[0]:
                return True, f"chart of {sibling.name}"
        return False, "bytes differ"
    if Path(rel).name == ".metadata" and any(a.parent.glob("*.distcp")):
        try:
            if _dcp_metadata_equal(a, b):
                return True, "dcp-metadata"
        except Exception as exc:  # an unreadable pickle is a mismatch, said as such
            return False, f"unreadable checkpoint metadata ({type(exc).__name__}: {exc})"
        return False, "checkpoint metadata differs"
    return False, "bytes differ"


def compare(original_root: Path, recorded: dict[str, str], rerun_root: Path,
            rerun_sums: dict[str, str]) -> list[tuple[str, str, str]]:
    """(file, result, detail) per file in either set; result: match | MISMATCH | missing | extra."""
    rows = []
    for rel in sorted(set(recorded) | set(rerun_sums)):
        if rel not in rerun_sums:
            rows.append((rel, "missing", "not written by the re-execution"))
        elif rel not in recorded:
            rows.append((rel, "extra", "written only by the re-execution"))
        elif recorded[rel] == rerun_sums[rel]:
            rows.append((rel, "match", "bytes"))
        elif not (original_root / rel).is_file():
            rows.append((rel, "MISMATCH", "checksum differs; the original file is gone"))
        elif file_sha256(original_root / rel) != recorded[rel]:
            rows.append((rel, "MISMATCH", "the original file changed since its manifest"))
        else:
            same, how = compare_file(rel, original_root, rerun_root, original_root, rerun_root)
            rows.append((rel, "match" if same else "MISMATCH", how))
    return rows


def format_table(rows: list[tuple[str, str, str]]) -> str:
    head = ("file", "result", "how")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(2)]
    lines = [f"{head[0].ljust(widths[0])}  {head[1].ljust(widths[1])}  {head[2]}"]
    lines += [f"{f.ljust(widths[0])}  {r.ljust(widths[1])}  {h}" for f, r, h in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# re-execution

def _recorded_checksums(artifact: Path, manifest: dict) -> dict[str, str]:
    files = (manifest.get("checksums") or {}).get("files")
    if files is None:
        log.warning("%s: its manifest records no checksums (made before they were recorded); "
                    "comparing against the files as they are on disk now", artifact)
        return payload_checksums(artifact)
    return files


def _spec_for(artifact: Path, manifest: dict, spec_file: Path | None) -> dict:
    from fullchain.core import spec as spec_mod

    if spec_file is None:
        run = manifest.get("run")
        if not run:
            raise ArtifactError(f"{artifact / 'manifest.json'}: no 'run' recorded, so the spec "
                                "that made it is unknown; pass --spec <run dir>/spec.yaml")
        spec_file = Path(run) / "spec.yaml"
        if not spec_file.is_file():
            raise ArtifactError(f"{artifact / 'manifest.json'}: its run's spec {spec_file} is gone;"
                                " pass --spec with a spec that plans this step")
    spec_doc = spec_mod.load_spec(spec_file)
    # Inputs are looked up in the store that holds this artifact (ids do not depend on paths).
    spec_doc.setdefault("paths", {})["store"] = str(artifact.parent.parent)
    return spec_doc


def reexecute(artifact: Path, scratch: Path | None = None, spec_file: Path | None = None) -> Path:
    """Run the artifact's step again into `scratch`/<kind>/<step id> (default scratch:
    <paths.cache>/verify/<node>-<time>); returns that directory."""
    from fullchain.core import procs, runner, services
    from fullchain.core.config import to_dataclass
    from fullchain.core.launchers import LauncherConfig

    manifest = read_manifest(artifact)
    if manifest is None:
        raise ArtifactError(f"{artifact} has no manifest.json: the step is not complete, so there "
                            "is nothing to verify")
    spec_doc = _spec_for(artifact, manifest, spec_file)
    spec, steps = runner.plan(spec_doc)
    found = [s for s in steps if s.step_id == manifest["step_id"]]
    if not found:
        node = manifest.get("node", manifest["stage"])
        now = next((s for s in steps if s.name == node), None)
        raise ConfigError(
            f"{artifact}: planning its run's spec again no longer gives step {manifest['step_id']}"
            + (f" (node {node} is now {now.step_id}: {now.reason or 'its code or config changed'})"
               if now else f" (no node {node})")
            + ". verify re-executes a step with the code that made it; check out that commit "
              f"({(manifest.get('git') or {}).get('commit')}) or rerun the step.")
    step = found[0]
    missing = [f"{role}: {up.path}" for role, up in step.input_steps() if up.status != "cached"]
    if missing:
        raise ArtifactError(f"{artifact}: input artifact(s) not complete in the store: "
                            + "; ".join(missing))
    launcher = to_dataclass(LauncherConfig, spec.get("launcher") or {}, "launcher")
    if scratch is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        scratch = Path(spec["paths"]["cache"]).resolve() / "verify" / f"{step.name}-{stamp}"
    step.path = scratch / step.kind / step.step_id
    if step.path.exists():
        shutil.rmtree(step.path)
    run_dir = scratch / "run"
    serving: dict[str, services.Running] = {}
    try:
        step.urls = runner._serve_for(step, serving, spec, run_dir)
        request = runner._request(step)
        token = procs.step_token(step.path)
        log.info("verify: re-executing %s (%s) into %s", step.name, step.step_id, step.path)
        runner._launch(spec, step, launcher, manifest.get("git") or {}, False, run_dir, request,
                       token)
    finally:
        for running in serving.values():
            services.stop(running)
    return step.path


def verify(artifact: Path, scratch: Path | None = None, spec_file: Path | None = None,
           keep: bool = False) -> tuple[bool, list[tuple[str, str, str]], Path]:
    manifest = read_manifest(artifact) or {}
    recorded = _recorded_checksums(artifact, manifest)
    started = time.time()
    rerun = reexecute(artifact, scratch, spec_file)
    seconds = time.time() - started
    rerun_manifest = read_manifest(rerun) or {}
    rerun_sums = (rerun_manifest.get("checksums") or {}).get("files") or payload_checksums(rerun)
    rows = compare(artifact, recorded, rerun, rerun_sums)
    ok = all(r[1] == "match" for r in rows)
    log.info("verify: re-executed in %.1fs (the original took %ss)", seconds,
             manifest.get("duration_s", "?"))
    if ok and not keep:  # only what this call made: <scratch>/<kind>/<id> and <scratch>/run
        scratch_root = rerun.parent.parent
        shutil.rmtree(rerun, ignore_errors=True)
        shutil.rmtree(scratch_root / "run", ignore_errors=True)
        for empty in (rerun.parent, scratch_root):
            if empty.is_dir() and not any(empty.iterdir()):
                empty.rmdir()
    return ok, rows, rerun


def main(argv: list[str]) -> int:
    from fullchain.core.show import locate

    parser = argparse.ArgumentParser(
        prog="fullchain verify",
        description="Re-execute a step from its recorded inputs and config into a scratch "
                    "directory and compare payload checksums (exit 0 only if all match).")
    parser.add_argument("target", help="artifact directory, or a step id (prefix) in the store")
    parser.add_argument("--store", help="the artifact store for a step id (default: the spec's)")
    parser.add_argument("--spec", help="the resolved spec to plan the step with (default: the "
                                       "run's spec.yaml named by the manifest)")
    parser.add_argument("--scratch", help="where to re-execute (default: <paths.cache>/verify/"
                                          "<node>-<time>); removed after a full match")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    store = Path(args.store) if args.store else None
    if store is None and not Path(args.target).is_dir():
        from fullchain.core import spec as spec_mod

        spec = spec_mod.materialize(spec_mod.to_spec(spec_mod.compose(
            spec_mod.find_conf_dir(None), [])))
        store = Path(spec["paths"]["store"])
    artifact = locate(args.target, store).resolve()
    manifest = read_manifest(artifact)
    if manifest is None:
        raise ArtifactError(f"{artifact} has no manifest.json: nothing to verify")
    ok, rows, rerun = verify(artifact, Path(args.scratch).resolve() if args.scratch else None,
                             Path(args.spec) if args.spec else None, keep=args.keep)
    print(format_table(rows))
    matched = sum(1 for r in rows if r[1] == "match")
    exact = sum(1 for r in rows if r[2] == "bytes")
    print(f"\n{manifest.get('node', manifest['stage'])} {manifest['step_id']}: {matched}/{len(rows)} "
          f"files reproduced ({exact} bit for bit, {matched - exact} by a stated rule)"
          + ("" if ok else f"; the re-execution is kept at {rerun}"))
    sys.stdout.flush()
    return 0 if ok else 1
