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


def _content_inputs(payload: Any, config: Any, path: str = "") -> list[tuple[str, Any, dict]]:
    """(field, value, hashed view) for every field hashed by content: where the data came from.
    A view is {"sha256"} (a path's files) or {"sha256", "files": {name: sha256}} (a file list)."""
    found = []
    if isinstance(payload, dict):
        if "sha256" in payload and set(payload) <= {"sha256", "files"}:
            return [(path, config, payload)]
        for key, sub in payload.items():
            sub_cfg = config.get(key) if isinstance(config, dict) else None
            found += _content_inputs(sub, sub_cfg, f"{path}.{key}" if path else key)
    elif isinstance(payload, list):
        for i, sub in enumerate(payload):
            sub_cfg = config[i] if isinstance(config, list) and i < len(config) else None
            found += _content_inputs(sub, sub_cfg, f"{path}[{i}]")
    return found


FILES_SHOWN = 10


def _source_lines(indent: str, field: str, value: Any, view: dict, full: bool) -> list[str]:
    files = view.get("files")
    if files is None:
        return [f"{indent}    <- {field} = {value}  (sha256 {view['sha256'][:16]})"]
    lines = [f"{indent}    <- {field}: {len(files)} files (sha256 {view['sha256'][:16]})"]
    names = sorted(files)
    shown = names if full else names[:FILES_SHOWN]
    width = max((len(n) for n in shown), default=0)
    lines += [f"{indent}         {name.ljust(width)}  sha256 {files[name][:16]}" for name in shown]
    if len(names) > len(shown):
        lines.append(f"{indent}         ... {len(names) - len(shown)} more (--full lists every file)")
    return lines


def _input_records(manifest: dict) -> list[tuple[str, dict]]:
    """(role, {step_id, stage, node?, path}) of every input; a role may hold a list of them."""
    out = []
    for role, info in sorted((manifest.get("inputs") or {}).items()):
        for record in info if isinstance(info, list) else [info]:
            if isinstance(record, dict) and record.get("step_id"):
                out.append((role, record))
    return out


def _in_store(store: Path, record: dict) -> Path | None:
    """An input's artifact by its step id in the store being shown (never the recorded absolute
    path: a copied or moved store must not lead back to the original)."""
    sid = record["step_id"]
    for name in dict.fromkeys(n for n in (record.get("node"), record.get("stage")) if n):
        if (store / name / sid).is_dir():
            return store / name / sid
    matches = sorted(p for p in store.glob(f"*/{sid}") if p.is_dir())
    return matches[0] if matches else None


def _node_label(manifest: dict) -> str:
    """`pretrain`, or `dpo (tune)` for a node whose name is not its kind."""
    node = manifest.get("node") or manifest["stage"]
    return node if node == manifest["stage"] else f"{node} ({manifest['stage']})"


def _lineage(directory: Path, depth: int, seen: set, full: bool = False) -> list[str]:
    indent = "    " * depth
    manifest = read_manifest(directory)
    if manifest is None:
        return [f"{indent}{directory}  INCOMPLETE (no manifest)"]
    lines = [f"{indent}{_node_label(manifest)} {manifest['step_id']}  {directory}  "
             f"({manifest.get('ended_at', '?')}, {manifest.get('duration_s', '?')}s)"]
    if manifest["step_id"] in seen:
        return lines
    seen.add(manifest["step_id"])
    sources = _content_inputs(manifest.get("hash_payload", {}).get("config", {}),
                              manifest.get("config", {}))
    for field, value, view in sources:
        lines += _source_lines(indent, field, value, view, full)
    store = directory.resolve().parent.parent
    for role, record in _input_records(manifest):
        found = _in_store(store, record)
        if found is None:
            lines.append(f"{indent}    {record.get('stage', role)} {record['step_id']}  NOT IN THIS STORE "
                         f"({store}); the manifest recorded {record.get('path')}")
            continue
        lines += _lineage(found, depth + 1, seen, full)
    return lines


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        rows = []
        for key in sorted(value, key=str):
            rows += _flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [(prefix, value)]


def metric_rows(metrics: dict, width: int = 100) -> list[str]:
    """Metrics as aligned `key  value` rows, nested keys dotted; long values cut at `width`."""
    rows = _flatten(metrics or {})
    if not rows or rows == [("", {})]:
        return ["  (none)"]
    key_width = max(len(k) for k, _ in rows)
    out = []
    for key, value in rows:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if width and len(text) > width:
            text = text[: width - 3] + "..."
        out.append(f"  {key.ljust(key_width)}  {text}")
    return out


def render(directory: Path, full: bool = False) -> str:
    manifest = read_manifest(directory)
    if manifest is None:
        raise ArtifactError(f"{directory} has no {MANIFEST}: the step did not complete")
    env = manifest.get("environment", {})
    git = manifest.get("git", {})
    out = [
        f"artifact   {directory}",
        f"stage      {_node_label(manifest)}",
        "provides   " + (", ".join(f"{t} v{c.get('version')} at {c.get('path')}"
                                   for t, c in sorted((manifest.get("contracts") or {}).items()))
                         or "-"),
        f"step id    {manifest['step_id']}",
        f"code       {manifest.get('code_version')}",
        f"git        {git.get('commit')}{' (dirty)' if git.get('dirty') else ''}",
        f"env        {env.get('name')} python {env.get('python_version')} ({env.get('python')})",
        f"host       {manifest.get('host')}",
        "placement  " + (", ".join(f"{k} {v}" for k, v in sorted((manifest.get("placement") or {}).items()))
                         or "-"),
        f"time       {manifest.get('started_at')} -> {manifest.get('ended_at')} "
        f"({manifest.get('duration_s')}s)",
        "metrics",
        *metric_rows(manifest.get("metrics", {}), width=0 if full else 100),
        "",
        "lineage (back to the corpus):",
        *_lineage(directory, 0, set(), full),
    ]
    if full:
        out += ["", json.dumps(manifest, indent=2, sort_keys=True, default=str)]
    return "\n".join(out)
