"""Each package builds as its own wheel and imports alone: the namespace `fullchain` has no
__init__.py, a stage's public face imports without its heavy dependencies, and no package
depends on a sibling stage (stages meet only through artifacts)."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.parent.name for p in (REPO / "packages").glob("*/pyproject.toml"))
STAGES = {"data", "pretrain", "tune", "eval", "deploy", "agent"}
# What a stage may NOT pull in (opencompass pins transformers<5 and numpy<2; sibling stages).
FORBIDDEN = {
    "core": {"torch", "transformers", "megatron-core", "datatrove", "opencompass", "lmdeploy"},
    "data": {"opencompass", "lmdeploy", "peft", "lagent"},
    "pretrain": {"opencompass", "lmdeploy", "datatrove", "lagent"},
    "tune": {"opencompass", "lmdeploy", "datatrove", "megatron-core"},
    "eval": {"lmdeploy", "megatron-core", "datatrove"},
    "deploy": {"opencompass", "datatrove", "megatron-core"},
    "agent": {"opencompass", "megatron-core", "datatrove", "torch"},
}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheels")
    for name in PACKAGES:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(out), str(REPO / "packages" / name)], check=True)
    return out


def _requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
        assert not any(n == "fullchain/__init__.py" for n in zf.namelist()), "namespace broken"
    return [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]


@pytest.mark.parametrize("name", PACKAGES)
def test_dependencies_stay_in_their_lane(wheels, name):
    (wheel,) = wheels.glob(f"fullchain_{name}-*.whl")
    requires = [r for r in _requires(wheel) if "extra ==" not in r]
    names = {r.split(";")[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower()
             for r in requires}
    assert not names & FORBIDDEN[name], f"{name} requires {names & FORBIDDEN[name]}"
    assert not names & {f"fullchain-{s}" for s in STAGES}, "a stage must not depend on a sibling"
    if name != "core":
        assert "fullchain-core" in names


def test_each_package_imports_alone(wheels, tmp_path):
    """A bare venv (no third-party packages at all) holding one wheel and fullchain-core: every
    stage's config and public face import, so the driver can validate a spec without the stage's
    heavy libraries, and nothing heavy is imported as a side effect."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    (core,) = wheels.glob("fullchain_core-*.whl")
    for name in PACKAGES:
        target = tmp_path / f"site-{name}"
        wheel_files = [core] + ([] if name == "core" else list(wheels.glob(f"fullchain_{name}-*.whl")))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        *map(str, wheel_files)], check=True)
        module = f"fullchain.{name}"
        code = (f"import sys; sys.path.insert(0, {str(target)!r}); "
                f"import {module}; import fullchain; "
                f"assert not hasattr(fullchain, '__file__') or fullchain.__file__ is None; "
                f"assert {module}.__file__.startswith({str(target)!r}), {module}.__file__; "
                + ("" if name == "core" else f"import {module}.config; ")
                + "heavy = {'torch', 'megatron', 'datatrove', 'transformers'} & set(sys.modules); "
                f"assert not heavy, ('{name} imports at import time:', heavy)")
        result = subprocess.run([str(python), "-I", "-c", code], capture_output=True, text=True)
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
