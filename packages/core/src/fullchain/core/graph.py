"""The step graph: stages from the spec's `graph` table, each with its config, inputs and id.

The table is explicit (no registry filled by import side effects):

    graph:
      data:     {inputs: []}                  # module defaults to fullchain.<name>
      pretrain: {inputs: [data]}

`stages` names the targets; their upstream steps are part of the graph too (their ids feed
the targets' ids) and must be complete or selected.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fullchain.core.artifact import MANIFEST, ArtifactError, read_manifest
from fullchain.core.config import ConfigError, to_dataclass, to_plain
from fullchain.core.hashing import (
    ContentHasher,
    code_version,
    diff_payloads,
    digest,
    hash_payload,
    hash_view,
)


@dataclass
class StageSpec:
    name: str
    module: str
    inputs: list[str]
    config_class: str

    def load_config_class(self) -> type:
        module_name, _, class_name = self.config_class.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"graph.{self.name}: cannot import its config module '{module_name}' ({exc}). "
                f"Install the stage package (`pip install -e packages/{self.name}`) in the "
                "environment that runs `fullchain`."
            ) from exc
        try:
            return getattr(module, class_name)
        except AttributeError as exc:
            raise ConfigError(f"graph.{self.name}.config_class: {module_name} has no {class_name}") from exc


@dataclass
class Step:
    stage: StageSpec
    config: Any  # the stage's config dataclass instance
    inputs: dict[str, Step]
    code_version: str
    payload: dict
    step_id: str
    path: Path
    selected: bool  # a target of this run (else an upstream that must already be complete)
    status: str = "to-run"  # cached | to-run
    reason: str = ""
    manifest: dict | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def config_dict(self) -> dict:
        return to_plain(self.config)


def stage_specs(spec: dict) -> dict[str, StageSpec]:
    graph = spec.get("graph")
    if not isinstance(graph, dict) or not graph:
        raise ConfigError("graph: the spec needs a non-empty 'graph' table of stages")
    specs = {}
    for name, node in graph.items():
        node = node or {}
        unknown = set(node) - {"module", "inputs", "config_class"}
        if unknown:
            raise ConfigError(f"graph.{name}.{sorted(unknown)[0]}: unknown key; allowed: "
                              "['config_class', 'inputs', 'module']")
        module = node.get("module") or f"fullchain.{name}"
        inputs = list(node.get("inputs") or [])
        for upstream in inputs:
            if upstream not in graph:
                raise ConfigError(f"graph.{name}.inputs: '{upstream}' is not a stage of the graph "
                                  f"(stages: {sorted(graph)})")
        class_name = "".join(part.capitalize() for part in name.split("_")) + "Config"
        specs[name] = StageSpec(name, module, inputs,
                                node.get("config_class") or f"{module}.config:{class_name}")
    return specs


def _topological(specs: dict[str, StageSpec], targets: list[str]) -> list[str]:
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, chain: list[str]) -> None:
        if name in order:
            return
        if name in visiting:
            raise ConfigError(f"graph: cycle {' -> '.join(chain + [name])}")
        visiting.add(name)
        for upstream in specs[name].inputs:
            visit(upstream, chain + [name])
        visiting.discard(name)
        order.append(name)

    for target in targets:
        visit(target, [])
    return order


def build(spec: dict, store: Path, hasher: ContentHasher | None = None) -> list[Step]:
    """Validate the spec and compute every step's id and cache status. Runs nothing."""
    specs = stage_specs(spec)
    targets = spec.get("stages")
    if isinstance(targets, str):
        targets = [targets]
    if not targets:
        raise ConfigError("stages: empty; name the stages to run, e.g. stages=[data,pretrain]")
    for name in targets:
        if name not in specs:
            raise ConfigError(f"stages: '{name}' is not a stage of the graph; allowed: {list(specs)}")
    force = set(spec.get("force") or [])
    for name in force:
        if name not in specs:
            raise ConfigError(f"force: '{name}' is not a stage of the graph; allowed: {list(specs)}")
    hasher = hasher or ContentHasher()
    steps: dict[str, Step] = {}
    for name in _topological(specs, list(targets)):
        stage = specs[name]
        if name not in spec:
            raise ConfigError(f"{name}: the spec has no '{name}' node (config group conf/{name}/)")
        cls = stage.load_config_class()
        config = to_dataclass(cls, spec[name], name)
        inputs = {up: steps[up] for up in stage.inputs}
        code = code_version(stage.module)
        payload = hash_payload(name, hash_view(config, hasher, name),
                               {up: s.step_id for up, s in inputs.items()}, code)
        sid = digest(payload)
        step = Step(stage=stage, config=config, inputs=inputs, code_version=code, payload=payload,
                    step_id=sid, path=Path(store) / name / sid, selected=name in targets)
        _set_status(step, Path(store), forced=name in force)
        steps[name] = step
    hasher.save()
    return list(steps.values())


def _set_status(step: Step, store: Path, forced: bool) -> None:
    manifest = read_manifest(step.path)
    if manifest is not None and manifest.get("step_id") != step.step_id:
        raise ArtifactError(f"corrupt manifest {step.path / MANIFEST}: it says step_id "
                            f"{manifest.get('step_id')!r}, the directory is {step.step_id}")
    step.manifest = manifest
    if manifest is not None and not forced:
        step.status, step.reason = "cached", "complete artifact"
        return
    step.status = "to-run"
    if forced:
        step.reason = "forced (force=[...])"
    elif step.path.is_dir():
        step.reason = "incomplete artifact (an earlier attempt failed or was killed)"
    else:
        step.reason = why_not_cached(step, store)


def why_not_cached(step: Step, store: Path) -> str:
    """Compare with the newest complete artifact of the same stage: which field/input changed."""
    previous = None
    stage_dir = store / step.name
    if stage_dir.is_dir():
        for manifest_file in stage_dir.glob(f"*/{MANIFEST}"):
            try:
                manifest = json.loads(manifest_file.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if "hash_payload" in manifest and (
                previous is None or manifest.get("ended_at", "") > previous.get("ended_at", "")
            ):
                previous = manifest
    if previous is None:
        return "never run"
    changes = diff_payloads(previous["hash_payload"], step.payload)
    if not changes:
        return "same inputs as an existing artifact (store was edited?)"
    shown = "; ".join(changes[:3]) + (f"; +{len(changes) - 3} more" if len(changes) > 3 else "")
    return f"changed since {previous['step_id']}: {shown}"
