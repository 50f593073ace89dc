"""Step ids: what a step's output depends on, hashed.

step_id = sha256(stage name, the stage config as hashed (every field, minus those marked
`metadata={"hash": False}`; input paths marked `metadata={"hash": "content"}` by the content of
their files), the ids of its inputs, the stage's code version). Hash everything, opt out per
field: forgetting a mark then costs a recompute, never a stale reuse.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from fullchain.core.config import ConfigError

STEP_ID_LENGTH = 16
_GLOB_CHARS = set("*?[")


def canonical_json(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(payload: Any, length: int = STEP_ID_LENGTH) -> str:
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()[:length]


def _files_of(path: str) -> list[Path]:
    """Files a path field names: a file, every file under a directory, or a glob's matches."""
    if _GLOB_CHARS & set(path):
        matches = sorted(glob.glob(path, recursive=True))
        return sorted(
            f for m in matches for f in ([Path(m)] if os.path.isfile(m) else _files_of(m))
        )
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
    return []


class ContentHasher:
    """sha256 of files, cached by (path, size, mtime) so a large corpus is read once."""

    def __init__(self, cache_file: Path | None = None):
        self.cache_file = Path(cache_file) if cache_file else None
        self._cache: dict[str, str] = {}
        self._dirty = False
        if self.cache_file and self.cache_file.is_file():
            try:
                self._cache = json.loads(self.cache_file.read_text())
            except (json.JSONDecodeError, OSError):
                self._cache = {}

    def file_digest(self, file: Path) -> str:
        st = file.stat()
        key = f"{file.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in self._cache:
            h = hashlib.sha256()
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    h.update(block)
            self._cache[key] = h.hexdigest()
            self._dirty = True
        return self._cache[key]

    def path_digest(self, path: str, field_path: str) -> str:
        files = _files_of(path)
        if not files:
            raise ConfigError(f"{field_path}: {path!r} does not exist or matches no file")
        root = Path(path) if Path(path).is_dir() else None
        entries = []
        for f in files:
            # Names relative to a directory root count (renaming a shard changes order); the
            # absolute location of the corpus does not (a clone elsewhere gets the same id).
            name = str(f.relative_to(root)) if root else f.name
            entries.append((name, self.file_digest(f)))
        return digest(entries, length=64)

    def files_view(self, entries: list[tuple[str, Path]]) -> dict[str, Any]:
        """The hashed view of a list of (name, file): each file's sha256 by name, and one sha256
        of them all. Names, not locations: the same files elsewhere give the same view."""
        files = {name: self.file_digest(Path(file)) for name, file in entries}
        return {"sha256": digest(sorted(files.items()), length=64), "files": files}

    def save(self) -> None:
        if self.cache_file and self._dirty:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._cache))
            os.replace(tmp, self.cache_file)
            self._dirty = False


def hash_view(obj: Any, hasher: ContentHasher, path: str) -> Any:
    """The part of a stage config that affects its output, as plain data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        view = {}
        for f in dataclasses.fields(obj):
            mode = f.metadata.get("hash", True)
            value = getattr(obj, f.name)
            if mode is False:
                continue
            if mode == "content":
                # A config may name its files itself (`content_files(field)`, e.g. a corpus that
                # is a selection of the interpreter's stdlib rather than a path); None: the path.
                hook = getattr(obj, "content_files", None)
                files = hook(f.name) if callable(hook) else None
                view[f.name] = (hasher.files_view(files) if files is not None
                                else _content_view(value, hasher, f"{path}.{f.name}"))
            else:
                view[f.name] = hash_view(value, hasher, f"{path}.{f.name}")
        return view
    if isinstance(obj, (list, tuple)):
        return [hash_view(v, hasher, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        return {str(k): hash_view(v, hasher, f"{path}.{k}") for k, v in obj.items()}
    return obj


def _content_view(value: Any, hasher: ContentHasher, path: str) -> Any:
    if value is None or value == "":
        return value  # an unset path (e.g. a source that needs none) hashes as itself
    if isinstance(value, (list, tuple)):
        return [_content_view(v, hasher, f"{path}[{i}]") for i, v in enumerate(value)]
    return {"sha256": hasher.path_digest(str(value), path)}


def code_version(module: str, exclude: tuple[str, ...] = ()) -> str:
    """Hash of a stage package's source (every .py file, and package data files beside them),
    minus the sub-packages in `exclude` (other stage kinds living in the same package).

    Found through the import system of this interpreter; `fullchain plan` therefore needs each
    stage package importable (installed) in the driver environment (only its light config
    module is ever imported; this reads files, it does not import the package)."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise ConfigError(
            f"graph.{module.rsplit('.', 1)[-1]}.module: package '{module}' is not installed in "
            "this environment (`fullchain env sync`, or `pip install -e packages/<stage>`)."
        )
    if spec.submodule_search_locations:
        roots = [Path(p) for p in spec.submodule_search_locations]
        files = sorted(
            f
            for root in roots
            for f in root.rglob("*")
            if f.is_file() and f.suffix in {".py", ".jinja", ".json", ".yaml", ".txt"}
            and "__pycache__" not in f.parts and "tests" not in f.relative_to(root).parts
            and f.relative_to(root).parts[0] not in exclude
        )
        entries = [(str(f.relative_to(roots[0])) if f.is_relative_to(roots[0]) else f.name,
                    hashlib.sha256(f.read_bytes()).hexdigest()) for f in files]
    else:
        origin = Path(spec.origin)
        entries = [(origin.name, hashlib.sha256(origin.read_bytes()).hexdigest())]
    return digest(entries)


def hash_payload(stage: str, config_view: Any, input_ids: dict[str, str], code: str) -> dict:
    return {"stage": stage, "config": config_view, "inputs": dict(sorted(input_ids.items())),
            "code_version": code}


def diff_payloads(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths where two hash payloads differ, e.g. ['config.lr: 0.001 -> 0.0003']."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{sub}: (absent) -> {_short(new[key])}")
            elif key not in new:
                out.append(f"{sub}: {_short(old[key])} -> (absent)")
            else:
                out.extend(diff_payloads(old[key], new[key], sub))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out.extend(diff_payloads(a, b, f"{path}[{i}]"))
        return out
    return [] if old == new else [f"{path}: {_short(old)} -> {_short(new)}"]


def _short(value: Any, limit: int = 60) -> str:
    text = canonical_json(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
