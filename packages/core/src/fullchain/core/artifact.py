"""Artifacts: one directory per step, complete only once `manifest.json` exists.

The manifest is written last, atomically (write to a temporary file, fsync, rename), so a
killed or failed step never leaves a directory that looks complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"

NOT_CHECKSUMMED_DIRS = frozenset({".fullchain", "logs", "tensorboard"})
"""Directories (at any depth) whose files carry no checksum: they are bookkeeping, not payload,
and differ between two runs of the same step by nature: `.fullchain/` (the runner's request,
result, pids), `logs/` (the step's stdout/stderr; a library's own logs, e.g. datatrove's
`work/logs/` task logs and timing stats), `tensorboard/` (event files named and stamped with
the time, host and pid; the same scalars are in the stage's metrics files)."""

CHECKSUM_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHECKSUM_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def payload_files(root: Path) -> list[str]:
    """The payload's files, relative to `root`, sorted: everything but `manifest.json` and the
    NOT_CHECKSUMMED_DIRS; symlinks are not followed (a link to an input is not our payload)."""
    root = Path(root)
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in NOT_CHECKSUMMED_DIRS)
        rel_dir = Path(directory).relative_to(root)
        for name in files:
            rel = (rel_dir / name).as_posix()
            if rel == MANIFEST or (Path(directory) / name).is_symlink():
                continue
            found.append(rel)
    return sorted(found)


def payload_checksums(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every payload file (see payload_files)."""
    return {rel: file_sha256(Path(root) / rel) for rel in payload_files(root)}


class ArtifactError(RuntimeError):
    """An artifact directory is missing, incomplete or has an unreadable manifest."""


def jsonl_objects(lines: Iterable[str], where: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON Lines text; a line that is not a
    JSON object is a ValueError naming `where:line`."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}:{number}: expected a JSON object")
        yield number, record


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to `path` so readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_manifest(path: Path, node: str | None = None) -> dict[str, Any] | None:
    """The manifest of the artifact at `path`, None when there is none (step not complete).

    A manifest that exists but cannot be parsed raises ArtifactError naming the file and the
    two fixes that work; `node` (the graph node whose step writes `path`) makes the second exact."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        return None
    force = (f"`fullchain run ... force=[{node}]` (with {node} among the run's stages)" if node
             else "`fullchain run ... force=[<node>]` for the graph node that writes it")
    fix = (f"The step's output cannot be trusted; to recompute it, delete the directory "
           f"{file.parent}, or run {force}.")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"corrupt manifest {file}: {exc}. {fix}") from exc
    for key in ("stage", "step_id"):
        if key not in manifest:
            raise ArtifactError(f"corrupt manifest {file}: required key '{key}' is missing. {fix}")
    return manifest


@dataclass(frozen=True)
class Artifact:
    """A complete step output: its directory and its manifest."""

    path: Path
    manifest: dict[str, Any] = field(repr=False)
    url: str | None = None
    """Base URL of the server the runner started from this artifact (service roles only)."""

    @classmethod
    def load(cls, path: str | Path, url: str | None = None) -> Artifact:
        path = Path(path)
        if not path.is_dir():
            raise ArtifactError(f"artifact directory {path} does not exist.")
        manifest = read_manifest(path)
        if manifest is None:
            raise ArtifactError(
                f"{path} has no {MANIFEST}: the step that writes it did not finish "
                "(it failed or was killed); it is not a usable input."
            )
        return cls(path=path, manifest=manifest, url=url)

    @property
    def stage(self) -> str:
        """The stage kind that made it."""
        return self.manifest["stage"]

    @property
    def node(self) -> str:
        """The graph node that made it (the kind, for artifacts older than nodes)."""
        return self.manifest.get("node", self.manifest["stage"])

    @property
    def step_id(self) -> str:
        return self.manifest["step_id"]

    @property
    def config(self) -> dict[str, Any]:
        """The resolved stage config that produced this artifact."""
        return self.manifest.get("config", {})

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})
