"""Our benchmark files -> files OpenCompass's own loaders read correctly (stdlib only).

Each copy in ../shared/data comes in its source repository's format; FINDINGS.md lists what each
needs (probed with planted answers). A conversion writes the scored items, drawn with the seed
when `max_items` is set, into the step's artifact:

    gsm8k            as is (GSM8KDataset reads <dir>/test.jsonl and train.jsonl)
    mmlu             CSV with a header row and answers 0-3: header dropped (it would load as a
                     question), answers mapped to A-D (otherwise every item silently scores ~0)
    ceval, cmmlu     per-subject CSVs (id, question, A-D, answer letter), one set
    arc_*, boolq     llm-foundry jsonl {query, choices, gold}: options A.., gold index -> letter
    piqa, copa,      the same llm-foundry layout (commonsense sets)
    openbook_qa
    commonsense_qa   llm-foundry jsonl whose `query` holds the question AND its lettered choices
                     ("Question: ..\nChoices:\nA. bank\n..\nAnswer:") and whose `choices` are just
                     the letters: the question and option texts are parsed out of the query
    winogrande       llm-foundry {context_options: [2], continuation, gold}: option i = context i
                     + " " + continuation (the two full sentences), question fixed (WINOGRANDE_Q)
    hellaswag        llama.cpp's bz2 text, 6 lines per item (activity label: ctx / gold 0-3 / 4
                     endings) -> {query, choices, gold} jsonl, the layout OpenCompass's Hellaswag
                     loaders read
    truthfulqa_mc1   TruthfulQA.csv: the best answer among the incorrect ones ('; '-separated), in
                     an order shuffled per question (seeded by the question text), as an mcq
    truthfulqa_gen   TruthfulQA.csv -> {question, best_answer, correct_answers, incorrect_answers}
    humaneval        HumanEval.jsonl.gz gunzipped (task_id, prompt, canonical_solution, test,
                     entry_point), the drawn problems only

The multiple-choice sets become OpenCompass's custom-dataset mcq layout (`question`, `A`..,
`answer`), scored by its own templates (ppl or gen) and evaluators. Errors name file:line.
"""
from __future__ import annotations

import bz2
import csv
import glob
import gzip
import hashlib
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fullchain.core.artifact import jsonl_objects
from fullchain.core.schema import benchmark_item_id

CONVERSION_VERSION = 1
"""Bump when any conversion's output changes for the same input (recorded with every score)."""

LETTERS = "ABCDEFGHIJKLMNOP"
WINOGRANDE_Q = "Which of these sentences makes sense?"


class BenchmarkError(ValueError):
    """A benchmark file is missing or malformed; the message names the file (and line, field)."""


@dataclass(frozen=True)
class Converted:
    """One benchmark as OpenCompass will read it."""

    name: str
    kind: str
    """`gsm8k` (GSM8KDataset directory), `mcq` (custom-dataset jsonl), or a jsonl of the
    benchmark's own records: `hellaswag`, `truthfulqa_gen`, `humaneval`."""
    path: Path
    """The gsm8k directory, or the jsonl file."""
    num_items: int
    """Items scored (after the max_items draw)."""
    total_items: int
    """Items in the benchmark file(s)."""
    options: tuple[str, ...] = ()
    file_hash: str = ""
    """sha256 over the source files' bytes (in sorted order)."""
    item_ids: list[str] = field(default_factory=list)
    """The scored items, named as the data stage's decontamination.json names them (item_id)."""


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8")
    if path.suffix == ".bz2":
        return io.TextIOWrapper(bz2.open(path), encoding="utf-8")
    return open(path, encoding="utf-8-sig")


def source_files(name: str, pattern: str) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(pattern)) if any(c in pattern for c in "*?[") else (
        [Path(pattern)] if Path(pattern).is_file() else [])
    if not files:
        raise BenchmarkError(f"benchmarks[{name}].path: {pattern} matches no file")
    return files


def content_hash(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _jsonl(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open_text(file) as handle:
        try:
            yield from jsonl_objects(handle, file)
        except ValueError as exc:  # a malformed line, named by file:line
            raise BenchmarkError(str(exc)) from None


def _csv(file: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    with _open_text(file) as handle:
        reader = csv.DictReader(handle)
        missing = [k for k in required if k not in (reader.fieldnames or [])]
        if missing:
            raise BenchmarkError(f"{file}:1: header {reader.fieldnames} lacks column(s) {missing}")
        for record in reader:
            if any(record.get(k) is None for k in required):
                raise BenchmarkError(f"{file}:{reader.line_num}: row has fewer columns than the header")
            yield reader.line_num, record


def _need(record: dict, key: str, kind: type, where: str) -> Any:
    value = record.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BenchmarkError(f"{where}: field '{key}' is {value!r}, expected {kind.__name__}")
    return value


# ---------------------------------------------------------------------------- readers
# Each yields (item id, record in the target layout).


def item_id(file: Path, number: int) -> str:
    """An item's id as the data stage's decontamination names it (core's `benchmark_item_id`)."""
    return benchmark_item_id(file.name, number)


def _read_gsm8k(files: list[Path]) -> Iterator[tuple[str, dict]]:
    for file in files:
        for number, record in _jsonl(file):
            where = f"{file}:{number}"
            _need(record, "question", str, where)
            answer = _need(record, "answer", str, where)
            if "#### " not in answer:
                raise BenchmarkError(f"{where}: field 'answer' has no '#### <number>' final answer")
            yield item_id(file, number), {"question": record["question"], "answer": answer}


def _mcq(question: str, choices: list[str], gold: int, where: str) -> dict[str, str]:
    if not 0 <= gold < len(choices):
        raise BenchmarkError(f"{where}: gold answer index {gold} is outside the {len(choices)} choices")
    return {"question": question, **{LETTERS[i]: str(c) for i, c in enumerate(choices)},
            "answer": LETTERS[gold]}


def _read_foundry(files: list[Path]) -> Iterator[tuple[str, dict]]:
    """llm-foundry's {query, choices, gold} (ARC, BoolQ, commonsense sets)."""
    for file in files:
        for number, record in _jsonl(file):
            where = f"{file}:{number}"
            query = _need(record, "query", str, where)
            choices = _need(record, "choices", list, where)
            gold = _need(record, "gold", int, where)
            if query.startswith("Question: "):  # the mcq template writes its own "Question: "
                query = query[len("Question: "):]
            yield item_id(file, number), _mcq(query, choices, gold, where)


def _letter(value: str, options: int, where: str, field_name: str) -> int:
    value = value.strip()
    if value.isdigit() and int(value) < options:
        return int(value)
    if len(value) == 1 and value.upper() in LETTERS[:options]:
        return LETTERS.index(value.upper())
    raise BenchmarkError(f"{where}: field '{field_name}' is {value!r}, expected 0-{options - 1} "
                         f"or {LETTERS[0]}-{LETTERS[options - 1]}")


def _read_csv_mcq(files: list[Path], question: str, choices: tuple[str, ...],
                  answer: str) -> Iterator[tuple[str, dict]]:
    for file in files:
        for ordinal, (number, record) in enumerate(_csv(file, (question, *choices, answer)), start=2):
            where = f"{file}:{number}"
            gold = _letter(record[answer], len(choices), where, answer)
            item = _mcq(record[question], [record[c] for c in choices], gold, where)
            item["subject"] = file.stem.removesuffix("_test").removesuffix("_val")
            yield item_id(file, ordinal), item


def _read_commonsense_qa(files: list[Path]) -> Iterator[tuple[str, dict]]:
    """llm-foundry's CommonsenseQA: the options are lines "X. text" inside `query`."""
    for file in files:
        for number, record in _jsonl(file):
            where = f"{file}:{number}"
            query = _need(record, "query", str, where)
            gold = _need(record, "gold", int, where)
            stem, sep, rest = query.removeprefix("Question: ").partition("\nChoices:\n")
            lines = rest.removesuffix("Answer:").strip().split("\n")
            if not sep or not lines or any(line[1:3] != ". " for line in lines):
                raise BenchmarkError(f"{where}: field 'query' is not 'Question: ..\\nChoices:\\n"
                                     "A. ..\\n..Answer:'")
            letters = [line[0] for line in lines]
            if letters != list(LETTERS[:len(lines)]) or _need(record, "choices", list, where) != letters:
                raise BenchmarkError(f"{where}: choices {letters} in 'query' do not match "
                                     f"field 'choices' {record['choices']}")
            yield item_id(file, number), _mcq(stem.strip(), [line[3:] for line in lines], gold, where)


def _read_winogrande(files: list[Path]) -> Iterator[tuple[str, dict]]:
    for file in files:
        for number, record in _jsonl(file):
            where = f"{file}:{number}"
            contexts = _need(record, "context_options", list, where)
            continuation = _need(record, "continuation", str, where)
            gold = _need(record, "gold", int, where)
            if len(contexts) != 2 or not all(isinstance(c, str) for c in contexts):
                raise BenchmarkError(f"{where}: field 'context_options' must be 2 strings")
            yield item_id(file, number), _mcq(WINOGRANDE_Q, [f"{c} {continuation}" for c in contexts],
                                                gold, where)


def _read_hellaswag(files: list[Path]) -> Iterator[tuple[str, dict]]:
    """llama.cpp's HellaSwag text: per item "label: ctx", the gold index, then 4 endings."""
    for file in files:
        with _open_text(file) as handle:
            lines = handle.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) % 6:
            raise BenchmarkError(f"{file}:{len(lines)}: {len(lines)} lines is not a whole number of "
                                 "6-line items (context, gold 0-3, 4 endings); the file is truncated")
        for start in range(0, len(lines), 6):
            context, label, *endings = lines[start:start + 6]
            where = f"{file}:{start + 1}"
            if ": " not in context:
                raise BenchmarkError(f"{where}: {context[:60]!r} is not '<activity label>: <context>'")
            if label not in ("0", "1", "2", "3"):
                raise BenchmarkError(f"{file}:{start + 2}: gold {label[:20]!r} is not 0-3")
            yield item_id(file, start + 1), {"query": context, "choices": endings, "gold": int(label)}


def _truthfulqa_rows(files: list[Path]) -> Iterator[tuple[str, str, dict]]:
    fields = ("Question", "Best Answer", "Correct Answers", "Incorrect Answers")
    for file in files:
        for ordinal, (number, record) in enumerate(_csv(file, fields), start=2):
            where = f"{file}:{number}"
            empty = [k for k in fields if not record[k].strip()]
            if empty:
                raise BenchmarkError(f"{where}: field(s) {empty} empty")
            split = {k: [a.strip() for a in record[k].split(";") if a.strip()] for k in fields[2:]}
            yield item_id(file, ordinal), where, {
                "question": record["Question"].strip(), "best_answer": record["Best Answer"].strip(),
                "correct_answers": split["Correct Answers"], "incorrect_answers": split["Incorrect Answers"]}


def _read_truthfulqa_mc1(files: list[Path]) -> Iterator[tuple[str, dict]]:
    for item, where, row in _truthfulqa_rows(files):
        choices = [row["best_answer"], *row["incorrect_answers"]]
        if len(choices) > len(LETTERS):
            raise BenchmarkError(f"{where}: {len(choices)} answers, at most {len(LETTERS)} supported")
        order = list(range(len(choices)))
        random.Random(row["question"]).shuffle(order)  # seeded by the text: the same on every run
        yield item, _mcq(row["question"], [choices[i] for i in order], order.index(0), where)


def _read_truthfulqa_gen(files: list[Path]) -> Iterator[tuple[str, dict]]:
    for item, _, row in _truthfulqa_rows(files):
        yield item, row


def _read_humaneval(files: list[Path]) -> Iterator[tuple[str, dict]]:
    for file in files:
        for number, record in _jsonl(file):
            where = f"{file}:{number}"
            yield item_id(file, number), {key: _need(record, key, str, where) for key in (
                "task_id", "prompt", "canonical_solution", "test", "entry_point")}


READERS = {
    "gsm8k": ("gsm8k", _read_gsm8k),
    # This copy's header row is question,choice0..3,answer with answers 0-3.
    "mmlu": ("mcq", lambda files: _read_csv_mcq(files, "question", ("choice0", "choice1", "choice2", "choice3"), "answer")),
    "ceval": ("mcq", lambda files: _read_csv_mcq(files, "question", ("A", "B", "C", "D"), "answer")),
    "cmmlu": ("mcq", lambda files: _read_csv_mcq(files, "Question", ("A", "B", "C", "D"), "Answer")),
    "arc": ("mcq", _read_foundry),
    "boolq": ("mcq", _read_foundry),
    "piqa": ("mcq", _read_foundry),
    "copa": ("mcq", _read_foundry),
    "openbook_qa": ("mcq", _read_foundry),
    "commonsense_qa": ("mcq", _read_commonsense_qa),
    "winogrande": ("mcq", _read_winogrande),
    "hellaswag": ("hellaswag", _read_hellaswag),
    "truthfulqa_mc1": ("mcq", _read_truthfulqa_mc1),
    "truthfulqa_gen": ("truthfulqa_gen", _read_truthfulqa_gen),
    "humaneval": ("humaneval", _read_humaneval),
}
"""Benchmark name (or its prefix before `_`: arc_easy, arc_challenge) -> (kind, reader)."""


def reader_for(name: str):
    key = name if name in READERS else name.split("_")[0]
    if key not in READERS:
        raise BenchmarkError(f"benchmarks[{name}]: no conversion for this benchmark; supported: "
                             f"{sorted(READERS)} (a name may extend one with _suffix, e.g. arc_easy)")
    return READERS[key]


GENERATION_ONLY = ("truthfulqa_gen", "humaneval")
"""Kinds scored only by generation (a free answer, a program): no perplexity ranking."""


def check_mode(converted: Converted, mode: str) -> None:
    if mode == "ppl" and converted.kind in GENERATION_ONLY:
        raise BenchmarkError(f"benchmarks[{converted.name}].mode: ppl is not possible for "
                             f"{converted.kind} (scored by generation only); use mode: gen")


def draw(count: int, max_items: int | None, seed: int) -> list[int]:
    """Indices of the scored items: all, or `max_items` drawn with `seed`, in file order."""
    if max_items is None or max_items >= count:
        return list(range(count))
    return sorted(random.Random(seed).sample(range(count), max_items))


def convert(name: str, pattern: str, out_dir: Path, max_items: int | None = None,
            seed: int = 0) -> Converted:
    """Read benchmark `name` from `pattern` and write what OpenCompass loads under `out_dir`."""
    kind, reader = reader_for(name)
    files = source_files(name, pattern)
    items = list(reader(files))
    if not items:
        raise BenchmarkError(f"benchmarks[{name}].path: {pattern} holds no items")
    chosen = [items[i] for i in draw(len(items), max_items, seed)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind == "gsm8k":
        path = out_dir / name
        path.mkdir(exist_ok=True)
        _write_jsonl(path / "test.jsonl", [record for _, record in chosen])
        _write_jsonl(path / "train.jsonl", [])  # the loader opens it; zero-shot needs none
        options: tuple[str, ...] = ()
    elif kind != "mcq":  # the benchmark's own records, read by its OpenCompass loader
        path = out_dir / f"{name}.jsonl"
        _write_jsonl(path, [record for _, record in chosen])
        options = ()
    else:
        path = out_dir / f"{name}.jsonl"
        width = max(sum(1 for k in record if len(k) == 1 and k in LETTERS) for _, record in chosen)
        options = tuple(LETTERS[:width])
        rows = [{"question": r["question"], **{o: r.get(o, "") for o in options},
                 "answer": r["answer"]} for _, r in chosen]
        _write_jsonl(path, rows)
    return Converted(name=name, kind=kind, path=path, num_items=len(chosen), total_items=len(items),
                     options=options, file_hash=content_hash(files),
                     item_ids=[item for item, _ in chosen])


def _write_jsonl(file: Path, rows: list[dict]) -> None:
    with open(file, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
