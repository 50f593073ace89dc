"""Typed artifact contracts: what one stage writes and another reads.

An artifact type is a name, a version and a layout. A stage declares which types it provides
(each at a path inside its artifact) and which types each of its input roles accepts; the graph
refuses a wrong wiring before anything runs, the worker validates every declared output with the
type's reader before the step can complete, and the manifest records `contracts: {type:
{version, path}}`. Consumers read upstream outputs only through the readers here, never by
importing a sibling stage. Stdlib only: the driver validates specs without torch.

    packed_corpus       dataset.json + Megatron .bin/.idx per split       (data -> pretrain)
    tokenizer           a Hugging Face tokenizer dir with its chat template (data -> chat data)
    megatron_checkpoint checkpoints/latest.json + dist checkpoints          (pretrain)
    hf_model            weights + config + tokenizer + chat template + generation config
                        (pretrain, tune -> tune, eval, deploy)
    conversations       conversations.json + one JSONL per split: chat `messages` (+ `tools`)
                        or preference pairs `prompt`/`chosen`/`rejected`    (chat data -> tune, agent)
    tool_tasks          tasks.json + one JSONL per split: question, exact answer, expression,
                        and the tools' OpenAI schemas                       (chat data -> agent)
    deployment          deployment.json: engine, serve command, env, health path; a service the
                        runner can start for dependents                      (deploy -> eval, agent)
    eval_results        results.json: one row per model x benchmark          (eval)
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fullchain.core.artifact import Artifact, ArtifactError, write_json_atomic


class ContractError(ArtifactError):
    """An artifact does not hold what its type promises; the message names the file and key."""


@dataclass(frozen=True)
class ArtifactType:
    name: str
    version: int
    default_path: str
    """Where the type lives inside an artifact unless the stage declares another path."""
    read: Callable[[Path], Any]
    """Validate the payload at a path and return its typed view (raises ContractError)."""
    service: bool = False
    """A running server can be started from it (the runner does, for roles with serve=True)."""


@dataclass(frozen=True)
class Role:
    """One named input of a stage: which artifact type it accepts."""

    type: str
    """Artifact type name (one of TYPES)."""
    many: bool = False
    """A list of upstream nodes (e.g. eval's `models`), in the order the spec gives."""
    optional: bool = False
    """The node may leave this role unwired."""
    serve: bool = False
    """The runner starts the upstream service for this step and passes its base URL."""
    doc: str = ""


@dataclass(frozen=True)
class Stage:
    """A stage kind's declaration (in its package's light config module, as `STAGE`)."""

    kind: str
    """The name graph nodes use in `stage:` (e.g. `tune`, `data.chat`)."""
    module: str
    """The module with `run(cfg, inputs, out)`; started as `python -m <module>`."""
    config: type
    """The config dataclass."""
    group: str | None = None
    """The spec key (config group) a node of this kind reads by default; None = the kind."""
    inputs: dict[str, Role] = field(default_factory=dict)
    """Role name -> accepted type."""
    outputs: dict[str, str] | Callable[[Any], dict[str, str]] = field(default_factory=dict)
    """Artifact type -> path inside the artifact; or a function of the config giving that."""
    code_excludes: tuple[str, ...] = ()
    """Sub-packages of `module` that are other stage kinds: not part of this kind's code id."""
    code_package: str | None = None
    """The package whose source is this kind's code id (default: `module`); a sub-stage that
    uses its parent package's modules names the parent, so a change there re-runs it too."""

    @property
    def config_class(self) -> str:
        """`module:Class` of the config dataclass (what the worker imports)."""
        return f"{self.config.__module__}:{self.config.__qualname__}"

    def outputs_for(self, config: Any) -> dict[str, str]:
        return dict(self.outputs(config) if callable(self.outputs) else self.outputs)

    @property
    def config_group(self) -> str:
        return self.group or self.kind


# ---------------------------------------------------------------------------- helpers


def _load_json(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise ContractError(f"{file}: missing")
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(f"{file}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ContractError(f"{file}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _require(doc: dict, key: str, kind: type | tuple, file: Path) -> Any:
    if key not in doc:
        raise ContractError(f"{file}: required key '{key}' is missing")
    value = doc[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ContractError(f"{file}: key '{key}' is {value!r}, expected {getattr(kind, '__name__', kind)}")
    return value


def _check_version(doc: dict, type_name: str, file: Path) -> None:
    version = doc.get("version", 1)
    supported = TYPES[type_name].version
    if version != supported:
        raise ContractError(f"{file}: {type_name} version {version}; this fullchain reads version "
                            f"{supported} (rebuild the artifact, or upgrade fullchain)")


def locate(source: Artifact | str | Path, type_name: str) -> Path:
    """Where `type_name` lives in an artifact (from its manifest), or a plain directory as is.

    A complete artifact must declare the type in its manifest's `contracts` with the version this
    code reads; a bare directory (e.g. `tune.base_model=/path/to/hf-dir`) is taken as the type's
    root and validated by the reader alone."""
    if type_name not in TYPES:
        raise ContractError(f"unknown artifact type {type_name!r}; known: {sorted(TYPES)}")
    if not isinstance(source, Artifact):
        return Path(source)
    declared = source.manifest.get("contracts") or {}
    if type_name not in declared:
        raise ContractError(
            f"{source.path}: the {source.stage} step {source.step_id} provides "
            f"{sorted(declared) or 'no typed output'}, not {type_name}")
    entry = declared[type_name]
    if entry.get("version") != TYPES[type_name].version:
        raise ContractError(
            f"{source.path}: {type_name} version {entry.get('version')} in its manifest; this "
            f"fullchain reads version {TYPES[type_name].version}")
    return source.path / entry.get("path", TYPES[type_name].default_path)


def read(source: Artifact | str | Path, type_name: str) -> Any:
    """The typed view of `type_name` in `source` (validated)."""
    return TYPES[type_name].read(locate(source, type_name))


# ---------------------------------------------------------------------------- packed_corpus

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class PackedSplit:
    prefixes: list[str]
    """Megatron path prefixes (absolute once read) of the .bin/.idx pairs."""
    weights: list[float]
    """Blend weights, summing to 1."""
    num_tokens: list[int]
    num_documents: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class PackedCorpus:
    """`dataset.json` of a data artifact, with paths made absolute."""

    path: Path
    tokenizer_dir: Path
    vocab_size: int
    eod_id: int
    pad_id: int
    bos_id: int | None
    dtype: str
    splits: dict[str, PackedSplit]


def write_packed_corpus(out: Path, *, tokenizer: str, vocab_size: int, eod_id: int, pad_id: int,
                        bos_id: int | None, dtype: str, splits: dict[str, PackedSplit]) -> Path:
    """Write `out/dataset.json` (prefixes relative to `out`); returns its path."""
    payload = {"format": "megatron-indexed", "version": TYPES["packed_corpus"].version,
               "tokenizer": tokenizer, "vocab_size": vocab_size, "eod_id": eod_id,
               "pad_id": pad_id, "bos_id": bos_id, "dtype": dtype,
               "splits": {name: asdict(split) for name, split in splits.items()}}
    write_json_atomic(Path(out) / "dataset.json", payload)
    return Path(out) / "dataset.json"


def read_packed_corpus(source: Artifact | str | Path) -> PackedCorpus:
    """Parse and check a packed corpus; errors name the file and the key."""
    target = locate(source, "packed_corpus")
    file = target if target.name == "dataset.json" else target / "dataset.json"
    root = file.parent
    doc = _load_json(file)
    _check_version(doc, "packed_corpus", file)
    fmt = _require(doc, "format", str, file)
    if fmt != "megatron-indexed":
        raise ContractError(f"{file}: key 'format' is {fmt!r}, expected 'megatron-indexed'")
    dtype = _require(doc, "dtype", str, file)
    if dtype not in ("uint16", "int32"):
        raise ContractError(f"{file}: key 'dtype' is {dtype!r}, expected 'uint16' or 'int32'")
    bos = doc.get("bos_id")
    if bos is not None and (not isinstance(bos, int) or isinstance(bos, bool)):
        raise ContractError(f"{file}: key 'bos_id' is {bos!r}, expected an integer or null")
    splits: dict[str, PackedSplit] = {}
    for name, split in _require(doc, "splits", dict, file).items():
        where = f"{file}: splits.{name}"
        if name not in SPLITS:
            raise ContractError(f"{where}: unknown split (expected {', '.join(SPLITS)})")
        prefixes = split.get("prefixes") if isinstance(split, dict) else None
        if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
            raise ContractError(f"{where}.prefixes must be a list of path prefixes")
        weights = split.get("weights") or [1.0] * len(prefixes)
        num_tokens = split.get("num_tokens") or [0] * len(prefixes)
        if len(weights) != len(prefixes):
            raise ContractError(f"{where}.weights has {len(weights)} entries for {len(prefixes)} prefixes")
        if any(not isinstance(w, (int, float)) or w < 0 for w in weights):
            raise ContractError(f"{where}.weights must be non-negative numbers, got {weights}")
        absolute = []
        for prefix in prefixes:
            full = root / prefix
            for suffix in (".bin", ".idx"):
                if not Path(f"{full}{suffix}").is_file():
                    raise ContractError(f"{where}.prefixes: {full}{suffix} does not exist")
            absolute.append(str(full))
        if absolute:
            splits[name] = PackedSplit(absolute, [float(w) for w in weights], list(num_tokens),
                                       list(split.get("num_documents") or []))
    if "train" not in splits:
        raise ContractError(f"{file}: splits.train is missing or has no prefixes")
    tokenizer_dir = root / _require(doc, "tokenizer", str, file)
    read_tokenizer(tokenizer_dir)
    return PackedCorpus(path=root, tokenizer_dir=tokenizer_dir,
                        vocab_size=_require(doc, "vocab_size", int, file),
                        eod_id=_require(doc, "eod_id", int, file),
                        pad_id=_require(doc, "pad_id", int, file), bos_id=bos, dtype=dtype,
                        splits=splits)


# ---------------------------------------------------------------------------- tokenizer


@dataclass(frozen=True)
class TokenizerDir:
    path: Path
    chat_template: str | None
    """The Jinja chat template saved with the tokenizer (None: it has none)."""
    special_tokens: dict[str, Any]


def read_tokenizer(source: Artifact | str | Path) -> TokenizerDir:
    """A Hugging Face tokenizer directory: tokenizer.json (or a sentencepiece model) and
    tokenizer_config.json; the chat template from that config or chat_template.jinja."""
    path = locate(source, "tokenizer")
    if not path.is_dir():
        raise ContractError(f"{path}: tokenizer directory missing")
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise ContractError(f"{path}: no tokenizer.json or tokenizer.model")
    config = _load_json(path / "tokenizer_config.json")
    template = config.get("chat_template")
    if (path / "chat_template.jinja").is_file():
        template = (path / "chat_template.jinja").read_text(encoding="utf-8")
    if isinstance(template, list):  # several named templates: the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    special = {k: v for k, v in config.items() if k.endswith("_token") and isinstance(v, str)}
    return TokenizerDir(path=path, chat_template=template, special_tokens=special)


# ---------------------------------------------------------------------------- megatron_checkpoint


@dataclass(frozen=True)
class MegatronCheckpoint:
    path: Path
    """The checkpoints/ directory."""
    latest: Path
    """The last complete checkpoint (an iter_NNNNNNN directory)."""
    iteration: int


def read_megatron_checkpoint(source: Artifact | str | Path) -> MegatronCheckpoint:
    path = locate(source, "megatron_checkpoint")
    file = path / "latest.json"
    doc = _load_json(file)
    iteration = _require(doc, "iteration", int, file)
    latest = path / _require(doc, "path", str, file)
    if not latest.is_dir():
        raise ContractError(f"{file}: names {latest}, which does not exist")
    return MegatronCheckpoint(path=path, latest=latest, iteration=iteration)


# ---------------------------------------------------------------------------- hf_model

_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")


@dataclass(frozen=True)
class HFModel:
    """A Hugging Face model directory that tune, eval and deploy can all load offline."""

    path: Path
    model_type: str
    architectures: list[str]
    tokenizer: TokenizerDir
    generation_config: dict[str, Any]
    adapter: bool = False
    """A peft adapter directory (adapter_config.json) rather than full weights."""

    @property
    def chat_template(self) -> str | None:
        return self.tokenizer.chat_template


def read_hf_model(source: Artifact | str | Path) -> HFModel:
    """Check a HF model directory: config.json, weights, tokenizer with a chat template,
    generation_config.json. Errors name the directory and what is missing."""
    path = locate(source, "hf_model")
    if not path.is_dir():
        raise ContractError(f"{path}: model directory missing")
    adapter = (path / "adapter_config.json").is_file()
    config = _load_json(path / ("adapter_config.json" if adapter else "config.json"))
    if not adapter and not any(next(path.glob(g), None) for g in _WEIGHT_GLOBS):
        raise ContractError(f"{path}: no weights (*.safetensors or pytorch_model*.bin)")
    tokenizer = read_tokenizer(path)
    if not tokenizer.chat_template:
        raise ContractError(f"{path}: the tokenizer has no chat template (tokenizer_config.json "
                            "chat_template or chat_template.jinja)")
    generation = _load_json(path / "generation_config.json")
    return HFModel(path=path, model_type=str(config.get("model_type", config.get("peft_type", ""))),
                   architectures=list(config.get("architectures") or []), tokenizer=tokenizer,
                   generation_config=generation, adapter=adapter)


# ---------------------------------------------------------------------------- conversations

CONVERSATION_FORMATS = ("messages", "preference")
_ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ConversationSet:
    path: Path
    format: str
    """`messages` (SFT: OpenAI-style messages, optional `tools`) or `preference` (DPO pairs)."""
    splits: dict[str, Path]
    num_records: dict[str, int]

    def records(self, split: str) -> Iterator[dict[str, Any]]:
        """The records of a split, each checked; errors name file:line and the field."""
        if split not in self.splits:
            raise ContractError(f"{self.path / 'conversations.json'}: no split {split!r}; "
                                f"has {sorted(self.splits)}")
        file = self.splits[split]
        with open(file, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield check_conversation(json.loads(line), self.format, f"{file}:{number}")


def _check_tool_calls(calls: Any, where: str) -> None:
    """OpenAI-shaped calls: [{"type": "function", "function": {"name", "arguments"}}], arguments a
    JSON object (or a string that decodes to one; the chat template inlines it as it is)."""
    if not isinstance(calls, list) or not calls:
        raise ContractError(f"{where} must be a non-empty list of tool calls")
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or call.get("type", "function") != "function":
            raise ContractError(f"{where}[{j}] must be {{\"type\": \"function\", \"function\": "
                                f"{{\"name\", \"arguments\"}}}}")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise ContractError(f"{where}[{j}].function.name must be a non-empty string")
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as exc:
                raise ContractError(f"{where}[{j}].function.arguments is not valid JSON: {exc}") from None
        if not isinstance(arguments, dict):
            raise ContractError(f"{where}[{j}].function.arguments must be a JSON object, got "
                                f"{type(arguments).__name__}")


def check_conversation(record: Any, fmt: str, where: str) -> dict[str, Any]:
    """One canonical record, checked: `messages` [{role, content, tool_calls?}] (+ `tools`), or
    `prompt` (messages) / `chosen` / `rejected` (assistant messages). An assistant turn has content
    or OpenAI-shaped `tool_calls` (arguments a JSON object); a tool turn's content is a string;
    `tools` is a list of OpenAI function schemas."""
    if not isinstance(record, dict):
        raise ContractError(f"{where}: expected a JSON object")

    def messages(value: Any, key: str) -> None:
        if not isinstance(value, list) or not value:
            raise ContractError(f"{where}: '{key}' must be a non-empty list of messages")
        for i, message in enumerate(value):
            if not isinstance(message, dict) or message.get("role") not in _ROLES:
                raise ContractError(f"{where}: {key}[{i}].role must be one of {list(_ROLES)}")
            if not isinstance(message.get("content", ""), (str, type(None))):
                raise ContractError(f"{where}: {key}[{i}].content must be a string")
            if "tool_calls" in message:
                if message["role"] != "assistant":
                    raise ContractError(f"{where}: {key}[{i}].tool_calls: only an assistant turn "
                                        f"calls tools (role is {message['role']!r})")
                _check_tool_calls(message["tool_calls"], f"{where}: {key}[{i}].tool_calls")
            elif message["role"] == "assistant" and not message.get("content"):
                raise ContractError(f"{where}: {key}[{i}]: an assistant turn needs content or tool_calls")
            if message["role"] == "tool" and not isinstance(message.get("content"), str):
                raise ContractError(f"{where}: {key}[{i}].content: a tool turn's result must be a string")

    tools = record.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise ContractError(f"{where}: 'tools' must be a list of OpenAI function schemas")
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if (not isinstance(function, dict) or not isinstance(function.get("name"), str)
                    or tool.get("type", "function") != "function"):
                raise ContractError(f"{where}: tools[{i}] must be {{\"type\": \"function\", "
                                    f"\"function\": {{\"name\", \"description\", \"parameters\"}}}}")

    if fmt == "messages":
        messages(record.get("messages"), "messages")
        if not any(m["role"] == "assistant" for m in record["messages"]):
            raise ContractError(f"{where}: messages has no assistant turn")
    elif fmt == "preference":
        for key in ("prompt", "chosen", "rejected"):
            messages(record.get(key), key)
    else:
        raise ContractError(f"{where}: unknown conversation format {fmt!r}")
    return record


def _write_jsonl_splits(out: Path, splits: dict[str, Iterable[dict[str, Any]]],
                        check: Callable[[dict[str, Any], str], Any]) -> dict[str, int]:
    """`out/<split>.jsonl` for each split, every record checked (`check(record, "file:line")`)
    before it is written; each file appears whole or not at all. Returns the counts."""
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, records in splits.items():
        file = out / f"{split}.jsonl"
        tmp = file.with_suffix(f".jsonl.{os.getpid()}.tmp")
        count = 0
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                for record in records:
                    count += 1
                    check(record, f"{file}:{count}")
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, file)
        counts[split] = count
    return counts


def write_conversations(out: Path, fmt: str, splits: dict[str, Iterable[dict[str, Any]]],
                        extra: dict[str, Any] | None = None) -> Path:
    """Write one JSONL per split (each record checked) and `conversations.json`."""
    if fmt not in CONVERSATION_FORMATS:
        raise ContractError(f"format: {fmt!r} is not one of {list(CONVERSATION_FORMATS)}")
    out = Path(out)
    counts = _write_jsonl_splits(out, splits, lambda record, where: check_conversation(record, fmt, where))
    descriptor = {"version": TYPES["conversations"].version, "format": fmt,
                  "splits": {split: f"{split}.jsonl" for split in counts},
                  "num_records": counts, **(extra or {})}
    write_json_atomic(out / "conversations.json", descriptor)
    return out / "conversations.json"


def read_conversations(source: Artifact | str | Path) -> ConversationSet:
    path = locate(source, "conversations")
    file = path / "conversations.json"
    doc = _load_json(file)
    _check_version(doc, "conversations", file)
    fmt = _require(doc, "format", str, file)
    if fmt not in CONVERSATION_FORMATS:
        raise ContractError(f"{file}: key 'format' is {fmt!r}, expected one of {list(CONVERSATION_FORMATS)}")
    splits = {}
    for split, name in _require(doc, "splits", dict, file).items():
        if not (path / name).is_file():
            raise ContractError(f"{file}: splits.{split}: {path / name} does not exist")
        splits[split] = path / name
    return ConversationSet(path=path, format=fmt, splits=splits,
                           num_records=dict(doc.get("num_records") or {}))


# ---------------------------------------------------------------------------- tool_tasks


@dataclass(frozen=True)
class ToolTaskSet:
    """Questions whose exact answer needs a tool, with the tools to offer (the agent scores a
    model on them). A task: `id`, `question`, `answer` (the exact answer as text, e.g. "2035"),
    `expression` (what computes it), plus free metadata (family, wording, wording_seen, steps)."""

    path: Path
    tools: list[dict[str, Any]]
    """OpenAI function schemas ({"type": "function", "function": {...}}) the tasks are solved with."""
    system: str | None
    """The system prompt the conversations were made with (None: none)."""
    splits: dict[str, Path]
    num_tasks: dict[str, int]

    def tasks(self, split: str) -> Iterator[dict[str, Any]]:
        """The tasks of a split, each checked; errors name file:line and the field."""
        if split not in self.splits:
            raise ContractError(f"{self.path / 'tasks.json'}: no split {split!r}; has {sorted(self.splits)}")
        file = self.splits[split]
        with open(file, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield check_tool_task(json.loads(line), f"{file}:{number}")


def check_tool_task(task: Any, where: str) -> dict[str, Any]:
    if not isinstance(task, dict):
        raise ContractError(f"{where}: expected a JSON object")
    for key in ("id", "question", "answer", "expression"):
        if not isinstance(task.get(key), str) or not task[key]:
            raise ContractError(f"{where}: '{key}' must be a non-empty string")
    return task


def write_tool_tasks(out: Path, splits: dict[str, Iterable[dict[str, Any]]], tools: list[dict[str, Any]],
                     system: str | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write one JSONL per split (each task checked) and `tasks.json`."""
    check_conversation({"messages": [{"role": "assistant", "content": "-"}], "tools": tools},
                       "messages", "tools")
    out = Path(out)
    counts = _write_jsonl_splits(out, splits, check_tool_task)
    descriptor = {"version": TYPES["tool_tasks"].version, "tools": tools, "system": system,
                  "splits": {split: f"{split}.jsonl" for split in counts}, "num_tasks": counts,
                  **(extra or {})}
    write_json_atomic(out / "tasks.json", descriptor)
    return out / "tasks.json"


def read_tool_tasks(source: Artifact | str | Path) -> ToolTaskSet:
    path = locate(source, "tool_tasks")
    file = path / "tasks.json"
    doc = _load_json(file)
    _check_version(doc, "tool_tasks", file)
    tools = _require(doc, "tools", list, file)
    try:
        check_conversation({"messages": [{"role": "assistant", "content": "-"}], "tools": tools},
                           "messages", f"{file}")
    except ContractError as exc:
        raise ContractError(f"{exc} (key 'tools')") from None
    system = doc.get("system")
    if system is not None and not isinstance(system, str):
        raise ContractError(f"{file}: key 'system' is {system!r}, expected a string or null")
    splits = {}
    for split, name in _require(doc, "splits", dict, file).items():
        if not (path / name).is_file():
            raise ContractError(f"{file}: splits.{split}: {path / name} does not exist")
        splits[split] = path / name
    return ToolTaskSet(path=path, tools=tools, system=system, splits=splits,
                       num_tasks=dict(doc.get("num_tasks") or {}))


# ---------------------------------------------------------------------------- deployment


@dataclass(frozen=True)
class Deployment:
    """How to serve a model: the runner (and `fullchain serve`) start `command` with `{host}`,
    `{port}` and `{artifact}` filled in, wait for `health_path`, and talk OpenAI's API under
    `api_base`."""

    engine: str
    model_name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 0
    """0 = a free port chosen at start."""
    health_path: str = "/v1/models"
    api_base: str = "/v1"
    startup_timeout_s: float = 300.0
    path: Path | None = None
    api_key_env: str | None = None
    """Environment variable whose value (when set where the server starts) is the API key
    clients must send as `Authorization: Bearer <key>`; the key is never stored."""
    quantization: str = "none"
    """How the served weights differ from the source model (`none`, `awq-w4a16`, ...)."""
    source_model: str | None = None
    """The full-precision model it serves (lineage: eval compares the two)."""

    def argv(self, host: str, port: int) -> list[str]:
        values = {"host": host, "port": str(port), "artifact": str(self.path or "")}
        return [part.format(**values) for part in self.command]


def write_deployment(out: Path, deployment: Deployment) -> Path:
    payload = {k: v for k, v in asdict(deployment).items() if k != "path"}
    payload["version"] = TYPES["deployment"].version
    write_json_atomic(Path(out) / "deployment.json", payload)
    return Path(out) / "deployment.json"


def read_deployment(source: Artifact | str | Path) -> Deployment:
    path = locate(source, "deployment")
    file = path / "deployment.json"
    doc = _load_json(file)
    _check_version(doc, "deployment", file)
    command = _require(doc, "command", list, file)
    if not command or not all(isinstance(c, str) for c in command):
        raise ContractError(f"{file}: key 'command' must be a non-empty list of strings")
    port = doc.get("port", 0)
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise ContractError(f"{file}: key 'port' is {port!r}, expected 0..65535")
    return Deployment(engine=_require(doc, "engine", str, file),
                      model_name=_require(doc, "model_name", str, file), command=command,
                      env={str(k): str(v) for k, v in (doc.get("env") or {}).items()},
                      host=str(doc.get("host", "127.0.0.1")), port=port,
                      health_path=str(doc.get("health_path", "/v1/models")),
                      api_base=str(doc.get("api_base", "/v1")),
                      startup_timeout_s=float(doc.get("startup_timeout_s", 300.0)), path=path,
                      api_key_env=doc.get("api_key_env") or None,
                      quantization=str(doc.get("quantization", "none")),
                      source_model=doc.get("source_model") or None)


# ---------------------------------------------------------------------------- eval_results


@dataclass(frozen=True)
class EvalRow:
    model: str
    benchmark: str
    metric: str
    score: float
    num_items: int


@dataclass(frozen=True)
class EvalResults:
    path: Path
    rows: list[EvalRow]

    def table(self) -> dict[str, dict[str, float]]:
        """benchmark -> model -> score."""
        out: dict[str, dict[str, float]] = {}
        for row in self.rows:
            out.setdefault(row.benchmark, {})[row.model] = row.score
        return out


def write_eval_results(out: Path, rows: Iterable[EvalRow]) -> Path:
    payload = {"version": TYPES["eval_results"].version, "rows": [asdict(r) for r in rows]}
    write_json_atomic(Path(out) / "results.json", payload)
    return Path(out) / "results.json"


def read_eval_results(source: Artifact | str | Path) -> EvalResults:
    path = locate(source, "eval_results")
    file = path / "results.json"
    doc = _load_json(file)
    _check_version(doc, "eval_results", file)
    rows = []
    for i, row in enumerate(_require(doc, "rows", list, file)):
        try:
            rows.append(EvalRow(model=str(row["model"]), benchmark=str(row["benchmark"]),
                                metric=str(row["metric"]), score=float(row["score"]),
                                num_items=int(row["num_items"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ContractError(f"{file}: rows[{i}]: {exc!r}") from exc
    return EvalResults(path=path, rows=rows)


# Explicit on purpose (nothing registers itself on import).
TYPES: dict[str, ArtifactType] = {
    t.name: t for t in (
        ArtifactType("packed_corpus", 1, "dataset.json", read_packed_corpus),
        ArtifactType("tokenizer", 1, "tokenizer", read_tokenizer),
        ArtifactType("megatron_checkpoint", 1, "checkpoints", read_megatron_checkpoint),
        ArtifactType("hf_model", 1, "hf", read_hf_model),
        ArtifactType("conversations", 1, ".", read_conversations),
        ArtifactType("tool_tasks", 1, "tasks", read_tool_tasks),
        ArtifactType("deployment", 1, ".", read_deployment, service=True),
        ArtifactType("eval_results", 1, ".", read_eval_results),
    )
}


def validate_outputs(out: Path, outputs: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Read every declared output of a finished step with its type's reader (the worker calls
    this before the step can complete); returns the manifest's `contracts` entry."""
    declared = {}
    for type_name, rel in outputs.items():
        target = Path(out) / rel
        if type_name in TYPES:
            TYPES[type_name].read(target)
            declared[type_name] = {"version": TYPES[type_name].version, "path": rel}
        else:  # a type core does not know (a stage package's own, e.g. the test stages'): its
            # name still has to match between provider and consumer, and its path must exist
            if not target.exists():
                raise ContractError(f"{target}: declared output {type_name!r} was not written")
            declared[type_name] = {"version": 1, "path": rel}
    return declared
