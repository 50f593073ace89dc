"""Per-stage environments: each stage runs with the interpreter of the environment the spec names.

The real tools clash (opencompass needs transformers<5 and numpy<2; lmdeploy needs its own
torch), so a stage runs as a subprocess with its environment's python. The `env/` config group
says which environments exist, what each installs (the packages' own pyproject dependencies
plus a constraints file that keeps torch on its CPU build) and which stage uses which.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fullchain.core.config import ConfigError

KEY_PACKAGES = (
    "fullchain-core", "torch", "transformers", "tokenizers", "megatron-core", "datatrove",
    "datasets", "numpy", "peft", "opencompass", "lmdeploy", "lagent",
)

def describe_current() -> dict[str, Any]:
    """This interpreter: path, version, every installed distribution's version."""
    import importlib.metadata as md
    import platform

    packages = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[name.lower()] = dist.version
    return {"python": sys.executable, "python_version": platform.python_version(),
            "packages": dict(sorted(packages.items()))}


# `describe` runs the same function in another interpreter; it is sent as source because that
# environment may not hold fullchain-core (e.g. one built by hand).
_DESCRIBE = ("import json, sys\n" + inspect.getsource(describe_current).replace(
    "-> dict[str, Any]", "") + "print(json.dumps(describe_current()))\n")


@dataclass
class EnvSpec:
    name: str
    python: str
    packages: list[str] = field(default_factory=list)
    constraints: str | None = None
    editable: bool = True

    @property
    def is_current(self) -> bool:
        return self.python == "current"

    @property
    def interpreter(self) -> Path:
        return Path(sys.executable) if self.is_current else Path(self.python)

    @property
    def prefix(self) -> Path:
        """The venv directory (…/bin/python -> …)."""
        return self.interpreter.parent.parent


def env_specs(env_node: dict[str, Any]) -> dict[str, EnvSpec]:
    envs = env_node.get("envs") or {}
    specs = {}
    for name, node in envs.items():
        if not isinstance(node, dict) or "python" not in node:
            raise ConfigError(f"env.envs.{name}: needs at least a 'python' key (a path or 'current')")
        unknown = set(node) - {"python", "packages", "constraints", "editable"}
        if unknown:
            raise ConfigError(
                f"env.envs.{name}.{sorted(unknown)[0]}: unknown key; allowed: "
                "['constraints', 'editable', 'packages', 'python']"
            )
        specs[name] = EnvSpec(name=name, python=str(node["python"]),
                              packages=list(node.get("packages") or []),
                              constraints=node.get("constraints"),
                              editable=bool(node.get("editable", True)))
    return specs


def env_for_stage(env_node: dict[str, Any], stage: str | tuple[str, ...]) -> EnvSpec:
    """The environment of a step: `stage_env` by node name, else by stage kind, else `default`
    (`stage` is a name, or a step's (node, kind) names in that order)."""
    specs = env_specs(env_node)
    names = (stage,) if isinstance(stage, str) else tuple(stage)
    table = env_node.get("stage_env") or {}
    key = next((n for n in names if table.get(n)), None)
    name = table[key] if key else env_node.get("default")
    if name not in specs:
        where = f"env.stage_env.{key}" if key else "env.default"
        raise ConfigError(
            f"{where}: environment '{name}' is not defined; defined environments: "
            f"{sorted(specs)} (conf/env/*.yaml)"
        )
    return specs[name]


def check_interpreter(env: EnvSpec, stage: str) -> Path:
    python = env.interpreter
    if not (python.is_file() and os.access(python, os.X_OK)):
        raise ConfigError(
            f"environment '{env.name}' (env.envs.{env.name}.python) for stage '{stage}' has no "
            f"interpreter at {python}. Build it with `fullchain env sync {env.name}`."
        )
    return python


_described: dict[str, dict] = {}


def describe(python: Path) -> dict[str, Any]:
    """Interpreter path, version and every installed distribution's version (cached per process)."""
    key = str(python)
    if key not in _described:
        out = subprocess.run([str(python), "-c", _DESCRIBE], capture_output=True, text=True,
                             check=False, timeout=120)
        if out.returncode != 0:
            raise ConfigError(f"interpreter {python} failed to start: {out.stderr.strip()[-500:]}")
        _described[key] = json.loads(out.stdout)
    return _described[key]


def installer() -> str:
    return "uv" if shutil.which("uv") else "pip"


def sync_commands(env: EnvSpec, root: Path, tool: str | None = None) -> list[list[str]]:
    """The commands that create `env` and install its packages from the repo's own files."""
    if env.is_current:
        return []
    tool = tool or installer()
    python = str(env.interpreter)
    commands: list[list[str]] = []
    if not env.interpreter.exists():
        if tool == "uv":
            commands.append(["uv", "venv", "--python", sys.executable, str(env.prefix)])
        else:
            commands.append([sys.executable, "-m", "venv", str(env.prefix)])
    # --compile-bytecode: the .pyc files are written once, at install time. Where a machine sets
    # PYTHONDONTWRITEBYTECODE (CI here does), nothing else ever writes them, and every process
    # recompiled what it imports: ~15 s of CPU for torch + transformers, ~27 s for OpenCompass.
    # pip compiles by default.
    install = ["uv", "pip", "install", "--compile-bytecode", "--python", python] if tool == "uv" else [
        python, "-m", "pip", "install"]
    if env.constraints:
        install += ["-c", str(root / env.constraints)]
    for package in env.packages:
        target = str(root / package) if not package.startswith(("-", "http")) and "/" in package else package
        install += (["-e", target] if env.editable and "/" in package else [target])
    commands.append(install)
    return commands


def sync(env: EnvSpec, root: Path, tool: str | None = None, echo=print, verbose: bool = False) -> str:
    """Create/update `env`; returns one line saying what was done and how long it took. The
    installers' own output is shown only with `verbose`, or (its tail) when a command fails."""
    import time

    run_env = dict(os.environ)
    # uv ignores PIP_FIND_LINKS; where the machine ships local wheels (the CPU torch build)
    # pass them through, otherwise uv resolves torch to a multi-GB CUDA build.
    if os.environ.get("PIP_FIND_LINKS") and not os.environ.get("UV_FIND_LINKS"):
        run_env["UV_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"]
    started = time.time()
    commands = sync_commands(env, root, tool)
    for command in commands:
        if verbose:
            echo("$ " + " ".join(command))
        result = subprocess.run(command, env=run_env, check=False, text=True,
                                stdout=None if verbose else subprocess.PIPE,
                                stderr=None if verbose else subprocess.STDOUT)
        if result.returncode != 0:
            output = "" if verbose else "\n".join((result.stdout or "").strip().splitlines()[-40:])
            raise ConfigError(f"building environment '{env.name}' failed: `{' '.join(command)}` "
                              f"exited {result.returncode}" + (f"; its output ends:\n{output}" if output else ""))
    _described.pop(str(env.interpreter), None)
    if not commands:
        return f"{env.name}: the running interpreter ({env.interpreter}); nothing to install"
    what = ", ".join(env.packages) or "no packages"
    return (f"{env.name}: {what} -> {env.interpreter} "
            f"({commands[-1][0] if commands[-1][0] == 'uv' else 'pip'}, {time.time() - started:.1f}s)")
