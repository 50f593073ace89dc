"""Payload checksums in the manifest and `fullchain verify`, on the toy stages through the real
CLI; the comparison rules on real files (gzip, JSON, a real torch distributed checkpoint)."""
import gzip
import hashlib
import json
from pathlib import Path

import pytest
from fullchain.core.artifact import payload_files
from fullchain.core.verify import compare_file
from spine_testing import CONF, fullchain


def _artifact(store: Path, stage: str) -> Path:
    (manifest,) = (store / stage).glob("*/manifest.json")
    return manifest.parent


def test_checksums_and_verify_on_the_toy_chain(project):
    fullchain("run", "--conf", str(CONF))
    store = project / "artifacts"
    square = _artifact(store, "square")
    manifest = json.loads((square / "manifest.json").read_text())
    files = manifest["checksums"]["files"]
    assert manifest["checksums"]["algorithm"] == "sha256"
    # the payload only: not the manifest, the runner's .fullchain/ nor the step's logs/
    assert sorted(files) == ["partial.txt", "value.json"]
    assert (square / "logs" / "stderr.log").is_file() and (square / ".fullchain").is_dir()
    for rel, digest in files.items():
        assert hashlib.sha256((square / rel).read_bytes()).hexdigest() == digest
    count = _artifact(store, "count")
    ok = fullchain("verify", str(count))
    assert "counts.json  match   bytes" in ok.stdout
    assert "1/1 files reproduced (1 bit for bit" in ok.stdout
    assert "re-executing count" in ok.stderr
    # the re-execution ran in scratch, not over the artifact, and was removed after the match
    assert not list((project / ".cache" / "fullchain" / "verify").glob("*/count"))
    # toy square writes "started <time.time()>" into partial.txt: a real mismatch, by step id
    bad = fullchain("verify", square.name[:8], "--store", str(store), check=False)
    assert bad.returncode == 1, bad.stderr
    rows = {line.split()[0]: line.split()[1] for line in bad.stdout.splitlines()[1:] if line.strip()
            and not line.startswith("square")}
    assert rows == {"partial.txt": "MISMATCH", "value.json": "match"}
    (kept,) = (project / ".cache" / "fullchain" / "verify").glob("square-*/square/*")
    assert f"kept at {kept}" in bad.stdout
    assert (kept / "manifest.json").is_file()  # the runner's own manifest, checksums and all
    assert json.loads((kept / "manifest.json").read_text())["step_id"] == square.name
    # without its run's spec, verify says what to pass
    (Path(json.loads((count / "manifest.json").read_text())["run"]) / "spec.yaml").unlink()
    result = fullchain("verify", str(count), check=False)
    assert result.returncode == 2
    assert "spec.yaml is gone; pass --spec" in result.stderr


def test_payload_files_skip_bookkeeping(tmp_path):
    for rel in ("model/weights.bin", "logs/stderr.log", ".fullchain/request.json",
                "work/logs/task_00000.log", "tensorboard/events.out.tfevents.1.host.2.0",
                "manifest.json", "card.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    assert payload_files(tmp_path) == ["card.json", "model/weights.bin"]


def _pair(tmp_path, rel, original: bytes, rerun: bytes):
    a, b = tmp_path / "orig", tmp_path / "scratch" / "rerun"
    for root, data in ((a, original), (b, rerun)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return compare_file(rel, a, b, a, b), a, b


def test_rules_path_gzip_and_timing(tmp_path):
    a, b = tmp_path / "orig", tmp_path / "scratch" / "rerun"
    # a stage writing its own output path: equal once the scratch path reads as the original's
    line = '{{"id": 1, "file_path": "{}/work/x.jsonl"}}\n'
    assert _pair(tmp_path, "work/a.jsonl", line.format(a).encode(), line.format(b).encode())[0] \
        == (True, "path")
    # gzip stamps its header with the time; the same content compressed at another mtime
    plain = line.format(a).encode()
    first, second = gzip.compress(plain, mtime=1), gzip.compress(line.format(b).encode(), mtime=2)
    assert _pair(tmp_path, "work/b.jsonl.gz", first, second)[0] == (True, "gzip+path")
    # metrics: wall-clock keys out, every other value exact
    # (HF Trainer's final evaluation row: eval_runtime, eval_samples_per_second)
    rows = [{"step": 5, "loss": 6.99, "step_time": 0.24, "tokens_per_second": 14806.8},
            {"step": 82, "eval_loss": 0.61, "eval_runtime": 2.17, "eval_samples_per_second": 10.6}]
    again = [{**rows[0], "step_time": 0.28, "tokens_per_second": 12688.9},
             {**rows[1], "eval_runtime": 11.03, "eval_samples_per_second": 2.09}]
    as_jsonl = lambda rs: "".join(json.dumps(r) + "\n" for r in rs).encode()  # noqa: E731
    assert _pair(tmp_path, "metrics.jsonl", as_jsonl(rows), as_jsonl(again))[0] == (True, "timing")
    worse = [{**again[0], "loss": 6.98}, again[1]]
    assert _pair(tmp_path, "metrics.jsonl", as_jsonl(rows), as_jsonl(worse))[0] \
        == (False, "values differ")
    assert _pair(tmp_path, "w.bin", b"\x00\x01", b"\x00\x02")[0] == (False, "bytes differ")
    # a chart of measurements: reproduced when the JSON it is drawn from is (timings aside)
    bench = {"rows": [{"concurrency": 8, "requests": 12, "latency_p50_s": 1.25}]}
    _pair(tmp_path, "bench/bench.json", json.dumps(bench).encode(), json.dumps(
        {"rows": [{**bench["rows"][0], "latency_p50_s": 1.5}]}).encode())
    assert _pair(tmp_path, "bench/plot.png", b"\x89PNG-a", b"\x89PNG-b")[0] \
        == (True, "chart of bench.json")
    _pair(tmp_path, "bench/bench.json", json.dumps(bench).encode(), json.dumps(
        {"rows": [{**bench["rows"][0], "requests": 11}]}).encode())
    assert _pair(tmp_path, "bench/plot.png", b"\x89PNG-a", b"\x89PNG-b")[0] \
        == (False, "bytes differ")


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch: single-process save; overwrite
def test_rule_for_a_torch_distributed_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    import torch.distributed.checkpoint as dcp

    a, b = tmp_path / "orig", tmp_path / "scratch" / "rerun"
    state = {"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    for root in (a, b):
        dcp.save(state, checkpoint_id=str(root / "iter_1"))
    rel = "iter_1/.metadata"
    assert (a / rel).read_bytes() != (b / rel).read_bytes()  # a random save_id and the path
    assert compare_file(rel, a, b, a, b) == (True, "dcp-metadata")
    # different tensors: the shards differ by bytes, and so does the metadata's shape record
    dcp.save({"weight": torch.zeros(3, 3)}, checkpoint_id=str(b / "iter_1"))
    assert compare_file(rel, a, b, a, b) == (False, "checkpoint metadata differs")
