"""`fullchain report` on the tiny demo's real artifacts (the session's `tiny_run`), rendered in
a real headless Chromium: it loads with no console error, exception or failed load, every
section is there, every image decodes, and a screenshot is saved beside the run."""
import json
import struct
from pathlib import Path

import pytest
from browser_testing import load_page
from chain_testing import fullchain

SECTIONS = ["summary", "graph", "steps", "data", "losses", "eval", "deploy", "agent",
            "reproduction"]
ABSENT_UNLESS = {"eval": "eval", "deploy": "deploy", "agent": "agent"}


@pytest.fixture(scope="session")
def tiny_report(tiny_run):
    root, env, _ = tiny_run
    # a second run of the same spec (every step reused) gives the report its reuse ratio; the
    # fixture's own second run serves when it made one
    def runs(status):
        return [p.parent for p in sorted((root / "runs").glob("*/run.json"))
                if {s["status"] for s in json.loads(p.read_text())["steps"]} == {status}]

    def reused_runs():
        return runs("reused")

    if not reused_runs():
        fullchain("run", "--spec", str(runs("ran")[-1] / "spec.yaml"), env=env)
    assert reused_runs(), ("the second run of experiment=tiny did not reuse every step (did the "
                           f"code change while the test ran?): {sorted((root / 'runs').iterdir())}")
    latest = reused_runs()[-1]
    result = fullchain("report", str(latest), env=env)
    return root, latest, result


def _summary(stdout: str) -> dict[str, str]:
    rows = {}
    for line in stdout.splitlines():
        if "  " in line and not line.startswith("report: "):
            what, _, value = line.partition("  ")
            rows[what.strip()] = value.strip()
    return rows


def test_report_summary_comes_from_the_run(tiny_report):
    root, run_dir, result = tiny_report
    out = Path(result.stdout.strip().splitlines()[-1].removeprefix("report: "))
    assert out == run_dir / "report.html" and out.is_file()
    rows = _summary(result.stdout)
    record = json.loads((run_dir / "run.json").read_text())
    assert {s["status"] for s in record["steps"]} == {"reused"}
    # the ratio from the two run records of these steps, as written
    ids = {s["step_id"] for s in record["steps"]}
    computed = [r for r in (json.loads(p.read_text()) for p in sorted((root / "runs").glob("*/run.json")))
                if {s["step_id"] for s in r["steps"]} == ids
                and {s["status"] for s in r["steps"]} == {"ran"}]
    ratio = record["seconds"] / computed[-1]["seconds"]
    assert rows["second run / first run wall time (reuse)"].startswith(f"{ratio:,.3f}")
    pretrain = next(s for s in record["steps"] if s["stage"] == "pretrain")
    manifest = json.loads((Path(pretrain["path"]) / "manifest.json").read_text())
    trained = f"{manifest['metrics']['val_perplexity']:,.1f}"
    assert rows["pretrain: held-out perplexity, trained / untrained init"].startswith(trained)
    assert rows["wall time: pretrain"].startswith(f"{manifest['duration_s']:,.1f} s (reused")
    kinds = {json.loads((Path(s["path"]) / "manifest.json").read_text())["stage"]
             for s in record["steps"]}
    if "deploy" not in kinds:  # never an invented number
        assert rows["deploy c=8: output tokens/s, latency p50 / p99"] == "-, - / -"


def test_report_loads_in_chromium_without_errors(tiny_report):
    root, run_dir, _ = tiny_report
    shot = root / "report.png"
    page = load_page((run_dir / "report.html").as_uri(), screenshot=shot, expressions={
        "sections": "[...document.querySelectorAll('section[id]')].map(s => s.id)",
        "absent": "[...document.querySelectorAll('section[id]')].filter(s => "
                  "s.querySelector('.absent') && s.textContent.includes('not in this run'))"
                  ".map(s => s.id)",
        "broken_images": "[...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
                         ".length",
        "images": "document.images.length",
        "graph_boxes": "document.querySelectorAll('#graph svg rect').length",
        "external": "[...document.querySelectorAll('[src],[href]')].map(e => e.src || e.href)"
                    ".filter(u => !u.startsWith('data:') && !u.includes('#'))",
    })
    assert page.errors == []
    assert page.values["sections"] == SECTIONS
    steps = json.loads((run_dir / "run.json").read_text())["steps"]
    kinds = {json.loads((Path(s["path"]) / "manifest.json").read_text())["stage"] for s in steps}
    assert page.values["absent"] == [sec for sec, kind in ABSENT_UNLESS.items() if kind not in kinds]
    assert page.values["graph_boxes"] == len(steps)
    # the data card's histogram and the pretrain loss curve at least, all decoded, all inline
    assert page.values["images"] >= 2 and page.values["broken_images"] == 0
    assert page.values["external"] == []
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 1000 and height > 2000  # the whole page, not the first screen
    print(f"report screenshot: {shot}")


def test_the_browser_check_sees_errors(tmp_path):
    """The checker itself: a page with a failed image load and an uncaught exception."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<img src="missing.png"><script>notDefined();</script></body></html>')
    errors = load_page(page.as_uri()).errors
    assert any("notDefined" in e for e in errors), errors
    assert any("missing.png" in e for e in errors), errors
