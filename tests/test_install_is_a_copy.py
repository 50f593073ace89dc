"""A plain (non-editable) install of the packages is a real copy, with pip and with uv alike."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_no_uv_workspace_or_sources_table_makes_installs_editable():
    # uv installs a workspace member (or a `workspace = true` source) editable even without -e.
    for pyproject in [REPO / "pyproject.toml", *sorted(REPO.glob("packages/*/pyproject.toml"))]:
        uv = tomllib.loads(pyproject.read_text()).get("tool", {}).get("uv", {})
        assert "workspace" not in uv and "sources" not in uv, pyproject


def test_plain_uv_install_of_a_stage_and_core_is_a_real_copy(tmp_path):
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv not installed")
    # a copy of the checkout's layout, so the builds write nothing into the clone
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(REPO / "pyproject.toml", clone / "pyproject.toml")
    for name in ("core", "agent"):
        shutil.copytree(REPO / "packages" / name, clone / "packages" / name,
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([uv, "pip", "install", "-q", "--offline", "--python", str(python),
                              "packages/core", "packages/agent"], cwd=clone, capture_output=True, text=True)
    if install.returncode != 0 and "offline" in install.stderr.lower():
        pytest.skip("dependencies not in uv's cache (offline)")
    assert install.returncode == 0, install.stderr
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    for dist in ("fullchain_core", "fullchain_agent"):
        (info,) = site.glob(f"{dist}-*.dist-info")
        assert not json.loads((info / "direct_url.json").read_text())["dir_info"].get("editable")
    assert (site / "fullchain" / "core" / "cli.py").is_file() and not list(site.glob("__editable__*"))
