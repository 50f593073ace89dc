"""The spec: one Hydra tree composed into one resolved document.

A run writes its spec as ONE YAML file with composition done (defaults, experiment and
overrides applied) and every interpolation resolved except those into `paths.*`, which stay
`${paths.x}` so the same file reproduces the run on another machine or checkout: `paths` holds
the only machine-specific values, and step ids never depend on them.
"""
from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from fullchain.core.config import ConfigError
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONFIG_NAME = "config"
_SENTINEL = "\x00fc-paths\x00"


def find_project_root(start: Path | None = None) -> Path | None:
    """The nearest directory at or above `start` (default: cwd) holding conf/config.yaml."""
    here = (start or Path.cwd()).resolve()
    for candidate in [here, *here.parents]:
        if (candidate / "conf" / f"{CONFIG_NAME}.yaml").is_file():
            return candidate
    return None


def find_conf_dir(explicit: str | Path | None = None) -> Path:
    """--conf, else $FULLCHAIN_CONF, else conf/ of the project around the cwd, else the checkout
    this package was installed from (editable installs)."""
    for candidate in (explicit, os.environ.get("FULLCHAIN_CONF")):
        if candidate:
            path = Path(candidate).resolve()
            if not (path / f"{CONFIG_NAME}.yaml").is_file():
                raise ConfigError(f"config dir {path} has no {CONFIG_NAME}.yaml")
            return path
    root = find_project_root() or find_project_root(Path(__file__).parent)
    if root is None:
        raise ConfigError(
            "no conf/config.yaml found above the current directory; run fullchain inside a "
            "fullchain project, or pass --conf DIR (or set FULLCHAIN_CONF)."
        )
    return root / "conf"


def _project_root_resolver() -> str:
    env = os.environ.get("FULLCHAIN_ROOT")
    if env:
        return str(Path(env).resolve())
    root = find_project_root() or find_project_root(Path(__file__).parent)
    return str(root if root else Path.cwd())


def register_resolvers() -> None:
    """`${fc.root:}`: the project root (FULLCHAIN_ROOT, or the directory holding conf/)."""
    if not OmegaConf.has_resolver("fc.root"):
        OmegaConf.register_new_resolver("fc.root", _project_root_resolver)


def compose(conf_dir: Path, overrides: list[str]) -> DictConfig:
    """Compose the tree with Hydra's compose API (no output dir, no chdir, no logging setup)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    register_resolvers()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        # Hydra's "use +key / use ++key" advice goes in circles for a key under an
        # interpolation (`pretrain.model: ${model}`): say which key to override instead.
        hint = interpolation_hint(conf_dir, overrides)
        if hint:
            raise ConfigError(hint) from exc
        rewritten = fields_at_default(conf_dir, overrides)
        if rewritten is not None:
            return compose(conf_dir, rewritten)
        raise ConfigError(f"cannot compose {conf_dir}/{CONFIG_NAME}.yaml with {overrides}: {exc}") from exc
    if any(o.lstrip().startswith("+") and "." in o.split("=", 1)[0] for o in overrides):
        # `++pretrain.model.hidden_size=128` composes: it replaces the whole interpolated preset
        # with that one key. Refuse it with the same advice.
        hint = interpolation_hint(conf_dir, overrides)
        if hint:
            raise ConfigError(hint)
    return cfg


def _parse(overrides: list[str]) -> list | None:
    """Hydra's parse of the overrides (None when they do not parse: Hydra's error stands)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return None


def _is_group(conf_dir: Path, key: str) -> bool:
    """An override of a config group (`model=small`), not of a value."""
    return key.startswith("hydra") or (Path(conf_dir) / key.replace(".", "/")).is_dir()


_REFERENCE = re.compile(r"^\$\{\s*([A-Za-z_][\w.]*)\s*\}$")


def interpolation_hint(conf_dir: Path, overrides: list[str]) -> str | None:
    """A message for the first value override that writes INTO an interpolated node, e.g.
    `pretrain.model.hidden_size=66` where `pretrain.model: ${model}`: such a node has no keys of
    its own (plain and `+` overrides fail, `++` replaces the whole linked preset); the key to
    override is the one it links to (`model.hidden_size`). None when there is no such override."""
    from hydra.core.override_parser.types import OverrideType

    parsed = _parse(overrides)
    if parsed is None:
        return None

    def is_group(key: str) -> bool:
        return _is_group(conf_dir, key)

    values = [o for o in parsed if not is_group(o.key_or_group) and o.type != OverrideType.DEL]
    if not values:
        return None
    groups = [o.input_line for o in parsed if is_group(o.key_or_group) and not o.key_or_group.startswith("hydra")]
    try:
        base = OmegaConf.to_container(compose(conf_dir, groups), resolve=False)
    except ConfigError:
        return None
    for override in values:
        parts = override.key_or_group.split(".")
        for depth in range(1, len(parts)):
            node = _get(base, parts[:depth])
            if not isinstance(node, str) or "${" not in node:
                if isinstance(node, dict):
                    continue
                break
            prefix, rest = ".".join(parts[:depth]), ".".join(parts[depth:])
            target = _REFERENCE.match(node.strip())
            value = override.input_line.split("=", 1)[1] if "=" in override.input_line else "..."
            said = (f"{override.input_line}: {prefix} is not a node of its own but an "
                    f"interpolation, `{prefix}: {node}`, so an override cannot write into it "
                    "(`+`/`++` would replace the whole linked node with this one key).")
            if target:
                link = target.group(1)
                return f"{said} Override `{link}.{rest}={value}` instead: {prefix} follows it."
            return f"{said} Override the keys that interpolation reads instead."
    return None


def fields_at_default(conf_dir: Path, overrides: list[str]) -> list[str] | None:
    """Group YAMLs state only what differs from their dataclass's defaults, so Hydra does not
    know a key left at its default (`pretrain.precision=bf16` would need `+`). An override of
    such a key that IS a field of the node's config dataclass is rewritten as `++key=value`
    (which sets it); None when no override is of that kind (Hydra's own message then stands)."""
    import dataclasses

    from hydra.core.override_parser.types import OverrideType

    parsed = _parse(overrides)
    if parsed is None:
        return None

    def is_group(key: str) -> bool:
        return _is_group(conf_dir, key)

    groups = [o.input_line for o in parsed if is_group(o.key_or_group) and not o.key_or_group.startswith("hydra")]
    try:
        base = OmegaConf.to_container(compose(conf_dir, groups), resolve=False)
        from fullchain.core.graph import nodes_of

        classes = {node.config_key: node.decl.config for node in nodes_of(base).values()}
    except (ConfigError, OmegaConfBaseException, TypeError, ValueError):
        return None

    def is_field(cls: Any, parts: list[str]) -> bool:
        for i, part in enumerate(parts):
            if not dataclasses.is_dataclass(cls):
                return i > 0 and cls in (dict, Any)  # below a free mapping, any key
            hints = typing.get_type_hints(cls)
            names = {f.name for f in dataclasses.fields(cls)}
            if part not in names:
                return False
            cls = hints[part]
            cls = next((a for a in typing.get_args(cls) if dataclasses.is_dataclass(a)), cls)
        return True

    out, changed = [], False
    for override in parsed:
        parts = override.key_or_group.split(".")
        if (override.type == OverrideType.CHANGE and not is_group(override.key_or_group)
                and len(parts) > 1 and _get(base, parts) is None and parts[0] in classes
                and is_field(classes[parts[0]], parts[1:])):
            out.append("++" + override.input_line)
            changed = True
        else:
            out.append(override.input_line)
    return out if changed else None


def _get(container: Any, parts: list[str]) -> Any:
    node = container
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def to_spec(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as a plain, resolved document (paths.* interpolations kept)."""
    register_resolvers()
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    cfg.pop("hydra", None)
    paths_raw = OmegaConf.to_container(cfg.get("paths", {}), resolve=False)
    stand_in = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for key in paths_raw:
        stand_in.paths[key] = f"{_SENTINEL}{key}{_SENTINEL}"
    try:
        resolved = OmegaConf.to_container(stand_in, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or ""
        raise ConfigError(f"{key}: {exc.msg if hasattr(exc, 'msg') else exc}") from exc
    resolved = _restore_paths(resolved)
    resolved["paths"] = paths_raw
    return resolved


def _restore_paths(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _restore_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_paths(v) for v in value]
    if isinstance(value, str) and _SENTINEL in value:
        parts = value.split(_SENTINEL)
        # parts alternate text, key, text, key, ...
        return "".join(f"${{paths.{p}}}" if i % 2 else p for i, p in enumerate(parts))
    return value


def materialize(spec: dict[str, Any]) -> dict[str, Any]:
    """Resolve the remaining `${paths.*}` (on this machine) into a plain dict."""
    register_resolvers()
    try:
        return OmegaConf.to_container(OmegaConf.create(spec), resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{getattr(exc, 'full_key', '')}: {exc}") from exc


def dump_spec(spec: dict[str, Any], file: Path) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# fullchain resolved spec: composition done, nothing left to compose.\n"
        "# Re-run exactly this with:  fullchain run --spec " + file.name + "\n"
    )
    file.write_text(header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))


def load_spec(file: Path) -> dict[str, Any]:
    file = Path(file)
    if not file.is_file():
        raise ConfigError(f"spec file {file} does not exist")
    try:
        spec = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(spec, dict) or "stages" not in spec or "graph" not in spec:
        raise ConfigError(f"{file}: not a fullchain spec (needs top-level 'stages' and 'graph')")
    return spec
