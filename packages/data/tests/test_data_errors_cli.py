"""A data-stage failure reaches the user of `fullchain run` as one paragraph: the stage's own
message, the step id and the log; the traceback stays in logs/stderr.log."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from data_testing import REPO, prose


def _run(tmp_path: Path, source: str) -> tuple[subprocess.CompletedProcess, Path]:
    env = dict(os.environ)
    env.update(FULLCHAIN_STORE=str(tmp_path / "store"), FULLCHAIN_RUNS=str(tmp_path / "runs"),
               FULLCHAIN_CACHE=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "fullchain.core.cli", "run", "experiment=tiny", "stages=[data]",
               f"data.sources=[{{name:dirty,path:'{source}'}}]", "++data.tasks=1", "++data.executor.workers=1"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    return result, tmp_path / "store" / "data"


def _step_dir(store: Path) -> Path:
    (step,) = [p for p in store.iterdir() if p.is_dir()]
    return step


def test_malformed_jsonl_is_one_paragraph_naming_file_line_step_and_log(tmp_path):
    corpus = tmp_path / "dirty.jsonl"
    good = "".join('{"text": "%s"}\n' % prose(i, 3) for i in range(3))
    corpus.write_bytes(good.encode() + b'{"text": "caf\xe9 au lait"}\n' + b'{"text": "after"}\n')
    result, store = _run(tmp_path, str(corpus))
    assert result.returncode == 1, result.stderr
    step = _step_dir(store)
    failure = result.stderr[result.stderr.index("fullchain: step failed"):]
    assert f"{corpus}:4: invalid UTF-8" in failure
    assert step.name in failure and str(step / "logs" / "stderr.log") in failure
    assert "Traceback" not in result.stderr and len(failure.strip().splitlines()) <= 2
    assert not (step / "manifest.json").exists()
    log = (step / "logs" / "stderr.log").read_text()
    assert "Traceback (most recent call last)" in log and "SourceError" in log


def test_whitespace_only_corpus_is_refused_before_any_worker_without_blaming_a_filter(tmp_path):
    corpus = tmp_path / "blank.jsonl"
    corpus.write_text("\n   \n\t\n")
    result, store = _run(tmp_path, str(corpus))
    assert result.returncode == 1, result.stderr
    failure = result.stderr[result.stderr.index("fullchain: step failed"):]
    assert re.search(rf"{re.escape(str(corpus))}: whitespace-only file \(source 'dirty'\)", failure)
    assert "filter" not in failure and "Traceback" not in result.stderr
    step = _step_dir(store)
    assert not (step / "work" / "logs" / "clean").exists()  # no datatrove pipeline started
