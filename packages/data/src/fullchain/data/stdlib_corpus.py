"""The demo corpus: the running interpreter's standard-library `.py` files.

Stdlib imports only: the driver lists the same selection the stage reads, to hash the files'
contents into the data step id (`SourceConfig.content_files`), without the stage's heavy
dependencies. Another Python's stdlib is other text, so it gives another step id; the same files
elsewhere give the same id (names are relative to the stdlib directory).
"""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path

# stdlib directories that are tests, vendored third-party code or generated tables: not prose or
# idiomatic code we want a demo model to read.
EXCLUDE = ("site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__",
           "encodings", "pydoc_data", "ensurepip", "turtledemo")


def stdlib_root() -> Path:
    """The standard library directory of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def _excluded(name: str) -> bool:
    return name in EXCLUDE or name.startswith("test_")


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The stdlib's non-empty .py files outside EXCLUDE, sorted by relative path (deterministic for
    a Python). Excluded directories are not entered (site-packages can be large)."""
    root = Path(root) if root is not None else stdlib_root()
    found: list[tuple[str, Path]] = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if not _excluded(d)]
        for name in names:
            if not name.endswith(".py") or _excluded(name):
                continue
            path = Path(directory) / name
            if path.stat().st_size == 0:  # empty package markers are not documents of this corpus
                continue
            found.append((path.relative_to(root).as_posix(), path))
    return [path for _, path in sorted(found)]


def selected_files(max_documents: int | None, root: Path | None = None) -> list[Path]:
    """The files a stdlib source reads: one file is one document, so a cap cuts the listing."""
    files = stdlib_files(root)
    return files if max_documents is None else files[:max_documents]


def content_entries(max_documents: int | None) -> list[tuple[str, Path]]:
    """(name relative to the stdlib directory, file) of every file the source reads."""
    root = stdlib_root()
    return [(path.relative_to(root).as_posix(), path) for path in selected_files(max_documents, root)]
