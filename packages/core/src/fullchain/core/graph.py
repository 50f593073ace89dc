"""The step graph: nodes of a stage kind, wired by role, each with its config, inputs and id.

    graph:
      data:      {stage: data}
      pretrain:  {stage: pretrain, inputs: {corpus: data}}
      sft:       {stage: tune, inputs: {model: pretrain}}
      dpo:       {stage: tune, config: dpo, inputs: {model: sft}}
      eval:      {stage: eval, inputs: {models: [pretrain, sft, dpo]}}

A node names its kind (`stage`, default: the node's name); the kind's declaration (`STAGE` in
`fullchain.<kind>.config`, or in `<module>.config` when the node gives `module`) says which
roles it accepts and which artifact types it provides, so a wrong wiring is a config error
before anything runs. A node's config is the spec key `config` (default: the node's own name
when the spec has that key, else the kind's config group), so two nodes of one kind can differ
(`tune@dpo: dpo` in the defaults list puts a second tune config under `dpo`).

`stages` names the target nodes; their upstream nodes are part of the graph too (their ids feed
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
from fullchain.core.contracts import Role, Stage
from fullchain.core.hashing import (
    ContentHasher,
    code_version,
    diff_payloads,
    digest,
    hash_payload,
    hash_view,
)

_NODE_KEYS = ("config", "inputs", "module", "stage")


@dataclass
class Node:
    name: str
    kind: str
    decl: Stage
    config_key: str
    inputs: dict[str, list[str] | str]
    """Role -> upstream node name (or a list of them for a role with many=True)."""

    def upstream(self) -> list[str]:
        out: list[str] = []
        for value in self.inputs.values():
            out += value if isinstance(value, list) else [value]
        return out


@dataclass
class Step:
    node: Node
    config: Any  # the stage's config dataclass instance, `auto` values resolved
    inputs: dict[str, Step | list[Step]]
    code_version: str
    payload: dict
    step_id: str
    path: Path
    selected: bool  # a target of this run (else an upstream that must already be complete)
    placement: dict = field(default_factory=dict)
    urls: dict = field(default_factory=dict)
    """Role -> base URL of the server the runner started for a serve role (while it runs)."""
    status: str = "to-run"  # cached | to-run
    reason: str = ""
    manifest: dict | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The node's name in the graph."""
        return self.node.name

    @property
    def kind(self) -> str:
        return self.node.kind

    @property
    def names(self) -> tuple[str, ...]:
        """Node name, then kind: what env/launcher selections match (the node's own wins)."""
        return (self.name, self.kind) if self.name != self.kind else (self.name,)

    @property
    def stage(self) -> Stage:
        return self.node.decl

    @property
    def config_dict(self) -> dict:
        return to_plain(self.config)

    def input_steps(self) -> list[tuple[str, Step]]:
        """(role, upstream step) pairs, a many-role giving one pair per upstream."""
        pairs = []
        for role, value in self.inputs.items():
            for step in value if isinstance(value, list) else [value]:
                pairs.append((role, step))
        return pairs


def load_declaration(module: str, where: str) -> Stage:
    """`STAGE` of `<module>.config` (the stage package's light, stdlib-only config module)."""
    config_module = f"{module}.config"
    try:
        mod = importlib.import_module(config_module)
    except ImportError as exc:
        package = module.split(".")[1] if module.startswith("fullchain.") else module
        raise ConfigError(
            f"{where}: cannot import '{config_module}' ({exc}). Install the stage package "
            f"(`pip install -e packages/{package}`) in the environment that runs `fullchain`."
        ) from exc
    decl = getattr(mod, "STAGE", None)
    if not isinstance(decl, Stage):
        raise ConfigError(f"{where}: {config_module} has no STAGE declaration "
                          "(fullchain.core.contracts.Stage: module, config, inputs, outputs)")
    return decl


def _entries(spec: dict) -> dict[str, dict]:
    graph = spec.get("graph")
    if not isinstance(graph, dict) or not graph:
        raise ConfigError("graph: the spec needs a non-empty 'graph' table of nodes")
    entries = {}
    for name, entry in graph.items():
        entry = entry or {}
        where = f"graph.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping like {{stage: tune, inputs: {{model: "
                              f"pretrain}}}}, got {entry!r}")
        unknown = sorted(set(entry) - set(_NODE_KEYS))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown key; allowed: {list(_NODE_KEYS)}")
        entries[name] = entry
    return entries


def _reachable(entries: dict[str, dict], targets: list[str]) -> set[str]:
    """The targets and every node upstream of them (by the raw `inputs` references)."""
    seen: set[str] = set()
    todo = [t for t in targets if t in entries]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        inputs = entries[name].get("inputs") or {}
        values = inputs.values() if isinstance(inputs, dict) else inputs
        for value in values:
            todo += [u for u in (value if isinstance(value, list) else [value])
                     if isinstance(u, str) and u in entries]
    return seen


def nodes_of(spec: dict, only: set[str] | None = None) -> dict[str, Node]:
    """Parse and check the `graph` table (names, keys, roles, references); no types yet.

    With `only`, the stage declarations of the other nodes are not loaded: planning data and
    pretrain needs neither the eval package nor any other stage off the path."""
    graph = _entries(spec)
    nodes = {}
    for name, entry in graph.items():
        if only is not None and name not in only:
            continue
        where = f"graph.{name}"
        named = entry.get("stage") or (None if entry.get("module") else name)
        decl = load_declaration(entry.get("module") or f"fullchain.{named}", f"{where}.stage")
        if named is not None and str(named) != decl.kind:
            raise ConfigError(f"{where}.stage: '{named}', but {decl.module}.config declares the "
                              f"kind '{decl.kind}'")
        kind = decl.kind
        inputs = entry.get("inputs") or {}
        if isinstance(inputs, list):
            raise ConfigError(
                f"{where}.inputs: inputs are named by role now, e.g. inputs: {{"
                + ", ".join(f"{r}: ..." for r in decl.inputs) + f"}} (roles of {kind}: "
                f"{sorted(decl.inputs) or 'none'}); got the list {inputs}")
        if not isinstance(inputs, dict):
            raise ConfigError(f"{where}.inputs: expected a mapping role -> node, got {inputs!r}")
        for role, value in inputs.items():
            if role not in decl.inputs:
                raise ConfigError(f"{where}.inputs.{role}: stage '{kind}' has no role '{role}'; "
                                  f"its roles: {sorted(decl.inputs) or 'none'}")
            accepted = decl.inputs[role]
            if isinstance(value, list) and not accepted.many:
                raise ConfigError(f"{where}.inputs.{role}: takes one node, got the list {value}")
            for upstream in value if isinstance(value, list) else [value]:
                if upstream not in graph:
                    raise ConfigError(f"{where}.inputs.{role}: '{upstream}' is not a node of the "
                                      f"graph (nodes: {sorted(graph)})")
                if upstream == name:
                    raise ConfigError(f"{where}.inputs.{role}: a node cannot read itself")
        for role, accepted in decl.inputs.items():
            if role not in inputs and not accepted.optional:
                raise ConfigError(f"{where}.inputs.{role}: required role of stage '{kind}' is not "
                                  f"wired (it takes a {accepted.type} artifact)")
        inputs = {role: list(v) if isinstance(v, list) else (
            [v] if decl.inputs[role].many else v) for role, v in inputs.items()}
        config_key = entry.get("config") or (name if name in spec else decl.config_group)
        nodes[name] = Node(name=name, kind=kind, decl=decl, config_key=str(config_key),
                           inputs=inputs)
    return nodes


def _topological(nodes: dict[str, Node], targets: list[str]) -> list[str]:
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, chain: list[str]) -> None:
        if name in order:
            return
        if name in visiting:
            raise ConfigError(f"graph: cycle {' -> '.join(chain + [name])}")
        visiting.add(name)
        for upstream in nodes[name].upstream():
            visit(upstream, chain + [name])
        visiting.discard(name)
        order.append(name)

    for target in targets:
        visit(target, [])
    return order


def _check_role(node: Node, role: str, accepted: Role, upstream: Step) -> None:
    provided = upstream.stage.outputs_for(upstream.config)
    if accepted.type not in provided:
        raise ConfigError(
            f"graph.{node.name}.inputs.{role}: takes a {accepted.type} artifact, but node "
            f"'{upstream.name}' (stage {upstream.kind}) provides "
            f"{sorted(provided) or 'no typed output'} with its config")


def _select(spec: dict, key: str, nodes: dict) -> list[str]:
    names = spec.get(key) or []
    if isinstance(names, str):
        names = [names]
    for name in names:
        if name not in nodes:
            raise ConfigError(f"{key}: '{name}' is not a node of the graph; nodes: {list(nodes)}")
    return list(names)


def build(spec: dict, store: Path, hasher: ContentHasher | None = None,
          placements=None) -> list[Step]:
    """Validate the spec and compute every step's id and cache status. Runs nothing.

    `placements(node) -> Placement | None` says where each step will run; configs with a
    `resolve(placement)` method resolve their `auto` values from it before hashing."""
    entries = _entries(spec)
    targets = _select(spec, "stages", entries)
    nodes = nodes_of(spec, only=_reachable(entries, targets))
    if not targets:
        raise ConfigError("stages: empty; name the nodes to run, e.g. stages=[data,pretrain]")
    force = set(_select(spec, "force", entries))
    hasher = hasher or ContentHasher()
    steps: dict[str, Step] = {}
    codes: dict[str, str] = {}
    for name in _topological(nodes, targets):
        node = nodes[name]
        if node.config_key not in spec:
            raise ConfigError(f"{name}: the spec has no '{node.config_key}' node for graph.{name} "
                              f"(config group conf/{node.config_key}/, or graph.{name}.config)")
        config = to_dataclass(node.decl.config, spec[node.config_key], node.config_key)
        placement = placements(node) if placements else None
        if placement is not None and callable(getattr(config, "resolve", None)):
            try:
                config.resolve(placement)
            except (ValueError, TypeError) as exc:
                text = str(exc)
                raise ConfigError(f"{node.config_key}.{text}" if text[:1].isidentifier()
                                  else f"{node.config_key}: {text}") from exc
        inputs: dict[str, Step | list[Step]] = {}
        for role, value in node.inputs.items():
            ups = [steps[u] for u in (value if isinstance(value, list) else [value])]
            for up in ups:
                _check_role(node, role, node.decl.inputs[role], up)
            inputs[role] = ups if isinstance(value, list) else ups[0]
        package = node.decl.code_package or node.decl.module
        key = (package, node.decl.code_excludes)
        if str(key) not in codes:
            codes[str(key)] = code_version(package, exclude=node.decl.code_excludes)
        code = codes[str(key)]
        input_ids = {role: [s.step_id for s in v] if isinstance(v, list) else v.step_id
                     for role, v in inputs.items()}
        payload = hash_payload(node.kind, hash_view(config, hasher, node.config_key), input_ids, code)
        sid = digest(payload)
        step = Step(node=node, config=config, inputs=inputs, code_version=code, payload=payload,
                    step_id=sid, path=Path(store) / node.kind / sid, selected=name in targets,
                    placement=placement.as_dict() if placement is not None else {})
        _set_status(step, Path(store), forced=name in force)
        steps[name] = step
    hasher.save()
    return list(steps.values())


def _set_status(step: Step, store: Path, forced: bool) -> None:
    try:
        manifest = read_manifest(step.path, node=step.name)
        if manifest is not None and manifest.get("step_id") != step.step_id:
            raise ArtifactError(f"corrupt manifest {step.path / MANIFEST}: it says step_id "
                                f"{manifest.get('step_id')!r}, the directory is {step.step_id}. "
                                f"To recompute it, delete the directory {step.path}, or run "
                                f"`fullchain run ... force=[{step.name}]`.")
    except ArtifactError:
        if not forced:
            raise
        # force recomputes the step whatever its directory holds; the runner starts it empty
        step.manifest, step.status = None, "to-run"
        step.reason = "forced (force=[...]); the manifest there is corrupt"
        return
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
    """Compare with the newest complete artifact of the same kind (the same node's, if any):
    which field or input changed."""
    previous = None
    stage_dir = store / step.kind
    if stage_dir.is_dir():
        for manifest_file in stage_dir.glob(f"*/{MANIFEST}"):
            try:
                manifest = json.loads(manifest_file.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if "hash_payload" not in manifest:
                continue
            rank = (manifest.get("node", manifest.get("stage")) == step.name,
                    manifest.get("ended_at", ""))
            if previous is None or rank > previous[0]:
                previous = (rank, manifest)
    if previous is None:
        return "never run"
    previous = previous[1]
    changes = diff_payloads(previous["hash_payload"], step.payload)
    if not changes:
        return "same inputs as an existing artifact (store was edited?)"
    shown = "; ".join(changes[:3]) + (f"; +{len(changes) - 3} more" if len(changes) > 3 else "")
    return f"changed since {previous['step_id']}: {shown}"
