"""`fullchain show`: an artifact's manifest and its lineage back to the corpus."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fullchain.core.artifact import MANIFEST, ArtifactError, read_manifest


def locate(target: str, store: Path | None) -> Path:
    """An artifact directory from a path or a step id (or a unique prefix of one)."""
    path = Path(target)
    if path.is_dir():
        return path
    if store is None or not store.is_dir():
        raise ArtifactError(f"{target}: not a directory, and no artifact store to look it up in "
                            f"({store})")
    if len(target) < 4:
        raise ArtifactError(f"{target}: give at least 4 characters of a step id")
    matches = sorted(p for p in store.glob(f"*/{target}*") if p.is_dir())
    if not matches:
        raise ArtifactError(f"{target}: no artifact with that step id in {store}")
    if len(matches) > 1:
        raise ArtifactError(f"{target}: ambiguous step id prefix, matches "
                            + ", ".join(str(m) for m in matches))
    return matches[0]


def _content_inputs(payload: Any, config: Any, path: str = "") -> list[tuple[str, Any, str]]:
    """(field, value, sha256) for every field hashed by content: where the data came from."""
    found = []
    if isinstance(payload, dict):
        if set(payload) == {"sha256"}:
            return [(path, config, payload["sha256"])]
        for key, sub in payload.items():
            sub_cfg = config.get(key) if isinstance(config, dict) else None
            found += _content_inputs(sub, sub_cfg, f"{path}.{key}" if path else key)
    elif isinstance(payload, list):
        for i, sub in enumerate(payload):
            sub_cfg = config[i] if isinstance(config, list) and i < len(config) else None
            found += _content_inputs(sub, sub_cfg, f"{path}[{i}]")
    return found


def _lineage(directory: Path, depth: int, seen: set) -> list[str]:
    indent = "    " * depth
    manifest = read_manifest(directory)
    if manifest is None:
        return [f"{indent}{directory}  INCOMPLETE (no manifest)"]
    lines = [f"{indent}{manifest['stage']} {manifest['step_id']}  {directory}  "
             f"({manifest.get('ended_at', '?')}, {manifest.get('duration_s', '?')}s)"]
    if manifest["step_id"] in seen:
        return lines
    seen.add(manifest["step_id"])
    sources = _content_inputs(manifest.get("hash_payload", {}).get("config", {}),
                              manifest.get("config", {}))
    for field, value, sha in sources:
        lines.append(f"{indent}    <- {field} = {value}  (sha256 {sha[:16]})")
    for _name, info in sorted(manifest.get("inputs", {}).items()):
        lines += _lineage(Path(info["path"]), depth + 1, seen)
    return lines


def render(directory: Path, full: bool = False) -> str:
    manifest = read_manifest(directory)
    if manifest is None:
        raise ArtifactError(f"{directory} has no {MANIFEST}: the step did not complete")
    env = manifest.get("environment", {})
    git = manifest.get("git", {})
    out = [
        f"artifact   {directory}",
        f"stage      {manifest['stage']}",
        f"step id    {manifest['step_id']}",
        f"code       {manifest.get('code_version')}",
        f"git        {git.get('commit')}{' (dirty)' if git.get('dirty') else ''}",
        f"env        {env.get('name')} python {env.get('python_version')} ({env.get('python')})",
        f"host       {manifest.get('host')}",
        f"time       {manifest.get('started_at')} -> {manifest.get('ended_at')} "
        f"({manifest.get('duration_s')}s)",
        "metrics    " + json.dumps(manifest.get("metrics", {}), sort_keys=True, default=str)[:2000],
        "",
        "lineage (back to the corpus):",
        *_lineage(directory, 0, set()),
    ]
    if full:
        out += ["", json.dumps(manifest, indent=2, sort_keys=True, default=str)]
    return "\n".join(out)
