"""Our config -> OpenCompass's: the one place their config dicts are built (eval env only).

`to_opencompass_config` returns the dict OpenCompass's CLI reads from a config file (models,
datasets, model_dataset_combinations, infer/eval partitioner and runner); `render_config` writes
it as such a file (classes imported by name, values as Python literals), so the stage and
`opencompass <file>` run exactly the same thing.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fullchain.eval.benchmarks import Converted
from fullchain.eval.config import EvalConfig

GSM8K_PROMPT = "Question: {question}\nLet's think step by step\nAnswer:"
# OpenCompass's own prompts (configs/datasets/hellaswag/hellaswag_gen_6faab5.py,
# humaneval/humaneval_gen_8e312c.py); TruthfulQA's QA format (without its few-shot primer)
HELLASWAG_GEN_PROMPT = ("{ctx}\nQuestion: Which ending makes the most sense?\n"
                        "A. {A}\nB. {B}\nC. {C}\nD. {D}\n"
                        "You may choose from 'A', 'B', 'C', 'D'.\nAnswer:")
HUMANEVAL_PROMPT = "Complete the following python code:\n{prompt}"
TRUTHFULQA_PROMPT = "Q: {question}\nA:"


@dataclass(frozen=True)
class ModelSpec:
    """One model OpenCompass scores: a HF directory (base or chat) or an OpenAI endpoint."""

    name: str
    kind: str
    """`base` (ppl + gen tasks), `chat` (gen tasks with its chat template) or `api` (endpoint)."""
    path: str
    """HF directory, or the endpoint's base URL."""
    tokenizer: str
    """Tokenizer directory (for `api`: the local one used for prompt lengths)."""
    api_model: str = ""
    """Model name sent to the endpoint."""


# OpenCompass maps a SYSTEM prompt to a user turn unless the model's meta template reserves the
# role; the tool-use task declares its tools in the system turn, as the SFT conversations did.
CHAT_META_TEMPLATE = dict(round=[dict(role="HUMAN", api_role="HUMAN"),
                                 dict(role="BOT", api_role="BOT", generate=True)],
                          reserved_roles=[dict(role="SYSTEM", api_role="SYSTEM")])


def model_config(spec: ModelSpec, cfg: EvalConfig) -> dict[str, Any]:
    from opencompass.models import HuggingFaceBaseModel, HuggingFacewithChatTemplate, OpenAISDK

    if spec.kind == "api":
        return dict(type=OpenAISDK, abbr=spec.name, path=spec.api_model, key="EMPTY",
                    meta_template=CHAT_META_TEMPLATE,
                    openai_api_base=spec.path, tokenizer_path=spec.tokenizer,
                    max_seq_len=cfg.max_seq_len, max_out_len=cfg.max_new_tokens,
                    # OpenCompass sends a batch's requests at once from max_workers threads
                    # (default min(32, 2 * (cpus + 5))), rate-capped by query_per_second
                    batch_size=cfg.endpoint_concurrency, max_workers=cfg.endpoint_concurrency,
                    query_per_second=1000,
                    retry=cfg.endpoint_retries + 1, temperature=0.0)
    if spec.kind == "chat":
        return dict(type=HuggingFacewithChatTemplate, abbr=spec.name, path=spec.path,
                    tokenizer_path=spec.tokenizer, meta_template=CHAT_META_TEMPLATE,
                    max_seq_len=cfg.max_seq_len, max_out_len=cfg.max_new_tokens,
                    batch_size=cfg.batch_size, run_cfg=dict(num_gpus=0),
                    generation_kwargs=dict(do_sample=False))
    return dict(type=HuggingFaceBaseModel, abbr=spec.name, path=spec.path, tokenizer_path=spec.tokenizer,
                max_seq_len=cfg.max_seq_len, max_out_len=cfg.max_new_tokens,
                batch_size=cfg.batch_size, run_cfg=dict(num_gpus=0),
                # greedy decoding: scores must not depend on a sampling seed
                generation_kwargs=dict(do_sample=False))


def dataset_config(bench: Converted, mode: str, cfg: EvalConfig) -> dict[str, Any]:
    """OpenCompass's own dataset config for a converted benchmark, `mode` ppl or gen."""
    abbr = f"{bench.name}-{mode}"
    if bench.kind == "gsm8k":
        from opencompass.datasets import (
            GSM8KDataset,
            Gsm8kEvaluator,
            gsm8k_dataset_postprocess,
            gsm8k_postprocess,
        )
        from opencompass.openicl.icl_inferencer import GenInferencer
        from opencompass.openicl.icl_prompt_template import PromptTemplate
        from opencompass.openicl.icl_retriever import ZeroRetriever

        return dict(
            abbr=abbr, type=GSM8KDataset, path=str(bench.path),
            reader_cfg=dict(input_columns=["question"], output_column="answer"),
            infer_cfg=dict(prompt_template=dict(type=PromptTemplate, template=dict(
                round=[dict(role="HUMAN", prompt=GSM8K_PROMPT)])),
                retriever=dict(type=ZeroRetriever),
                inferencer=dict(type=GenInferencer, max_out_len=cfg.max_new_tokens)),
            eval_cfg=dict(evaluator=dict(type=Gsm8kEvaluator),
                          pred_postprocessor=dict(type=gsm8k_postprocess),
                          dataset_postprocessor=dict(type=gsm8k_dataset_postprocess)))
    if bench.kind == "hellaswag":
        return _hellaswag_config(bench, abbr, mode, cfg)
    if bench.kind in ("truthfulqa_gen", "humaneval"):
        return _oc_task_config(bench, abbr, cfg)
    from opencompass.datasets.custom import make_mcq_gen_config, make_mcq_ppl_config

    make = make_mcq_ppl_config if mode == "ppl" else make_mcq_gen_config
    dataset = make(dict(path=str(bench.path), abbr=abbr, options=list(bench.options),
                        input_columns=["question", *bench.options], output_column="answer"))
    if mode == "gen":
        dataset["infer_cfg"]["inferencer"]["max_out_len"] = cfg.max_new_tokens
    return dataset


def _hellaswag_config(bench: Converted, abbr: str, mode: str, cfg: EvalConfig) -> dict[str, Any]:
    """OpenCompass's HellaswagDataset_V2 (context = the query after its FIRST ': '; the V1 loader
    splits at the second one and silently cuts the 218 contexts that hold another ': ') and its
    AccEvaluator. ppl: each ending ranked as the continuation of the context (the template of
    hellaswag_ppl_47bff9 keyed by the V2 loader's letters); gen: hellaswag_gen_6faab5."""
    from opencompass.datasets import HellaswagDataset_V2
    from opencompass.openicl.icl_evaluator import AccEvaluator
    from opencompass.openicl.icl_inferencer import GenInferencer, PPLInferencer
    from opencompass.openicl.icl_prompt_template import PromptTemplate
    from opencompass.openicl.icl_retriever import ZeroRetriever
    from opencompass.utils.text_postprocessors import first_option_postprocess

    if mode == "ppl":
        template = {letter: dict(round=[dict(role="HUMAN", prompt="{ctx}"),
                                        dict(role="BOT", prompt=f"{{{letter}}}")]) for letter in "ABCD"}
        inferencer: dict[str, Any] = dict(type=PPLInferencer)
        eval_cfg: dict[str, Any] = dict(evaluator=dict(type=AccEvaluator))
    else:
        template = dict(round=[dict(role="HUMAN", prompt=HELLASWAG_GEN_PROMPT)])
        inferencer = dict(type=GenInferencer, max_out_len=cfg.max_new_tokens)
        eval_cfg = dict(evaluator=dict(type=AccEvaluator), pred_role="BOT",
                        pred_postprocessor=dict(type=first_option_postprocess, options="ABCD"))
    return dict(abbr=abbr, type=HellaswagDataset_V2, path=str(bench.path),
                reader_cfg=dict(input_columns=["ctx", "A", "B", "C", "D"], output_column="label"),
                infer_cfg=dict(prompt_template=dict(type=PromptTemplate, template=template),
                               retriever=dict(type=ZeroRetriever), inferencer=inferencer),
                eval_cfg=eval_cfg)


def _oc_task_config(bench: Converted, abbr: str, cfg: EvalConfig) -> dict[str, Any]:
    """TruthfulQA generation (local ROUGE-L) and HumanEval (OpenCompass's HumanevalDataset,
    sandboxed execution): generation only, see oc_tasks.py."""
    from fullchain.eval.oc_tasks import (
        HumanEvalSandboxEvaluator,
        TruthfulQAGenDataset,
        TruthfulQARougeEvaluator,
    )
    from opencompass.datasets import HumanevalDataset
    from opencompass.openicl.icl_inferencer import GenInferencer
    from opencompass.openicl.icl_prompt_template import PromptTemplate
    from opencompass.openicl.icl_retriever import ZeroRetriever

    if bench.kind == "humaneval":
        dataset_type, prompt, columns = HumanevalDataset, HUMANEVAL_PROMPT, (["prompt"], "task_id")
        evaluator = dict(type=HumanEvalSandboxEvaluator, timeout_s=cfg.humaneval_timeout_s,
                         memory_mb=cfg.humaneval_memory_mb, workers=cfg.humaneval_workers)
    else:
        dataset_type, prompt, columns = TruthfulQAGenDataset, TRUTHFULQA_PROMPT, (["question"], "best_answer")
        evaluator = dict(type=TruthfulQARougeEvaluator)
    return dict(abbr=abbr, type=dataset_type, path=str(bench.path),
                reader_cfg=dict(input_columns=columns[0], output_column=columns[1]),
                infer_cfg=dict(prompt_template=dict(type=PromptTemplate, template=dict(
                    round=[dict(role="HUMAN", prompt=prompt)])),
                    retriever=dict(type=ZeroRetriever),
                    inferencer=dict(type=GenInferencer, max_out_len=cfg.max_new_tokens)),
                eval_cfg=dict(evaluator=evaluator, pred_role="BOT"))


def tool_use_config(path: Path, tools: list[dict], cfg: EvalConfig) -> dict[str, Any]:
    from fullchain.eval.tool_dataset import ToolUseDataset, ToolUseEvaluator
    from opencompass.openicl.icl_inferencer import GenInferencer
    from opencompass.openicl.icl_prompt_template import PromptTemplate
    from opencompass.openicl.icl_retriever import ZeroRetriever

    return dict(
        abbr="tool_use-gen", type=ToolUseDataset, path=str(path),
        reader_cfg=dict(input_columns=["system", "question"], output_column="expression"),
        infer_cfg=dict(prompt_template=dict(type=PromptTemplate, template=dict(
            begin=[dict(role="SYSTEM", fallback_role="HUMAN", prompt="{system}")],
            round=[dict(role="HUMAN", prompt="{question}")])),
            retriever=dict(type=ZeroRetriever),
            inferencer=dict(type=GenInferencer, max_out_len=cfg.max_new_tokens)),
        eval_cfg=dict(evaluator=dict(type=ToolUseEvaluator, tools=tools)))


def modes_for(kind: str, benchmark_mode: str) -> str:
    """How a model kind scores a benchmark: chat models and endpoints only generate (OpenCompass
    scores no perplexity through a chat template or an API); base models use the benchmark's."""
    return "gen" if kind in ("chat", "api") else benchmark_mode


def to_opencompass_config(cfg: EvalConfig, models: list[ModelSpec],
                          benchmarks: list[tuple[Converted, str]],
                          tool_use: tuple[Path, list[dict]] | None, work_dir: Path) -> dict[str, Any]:
    """The whole OpenCompass config: every model with the datasets that fit it."""
    from opencompass.partitioners import NaivePartitioner
    from opencompass.runners import LocalRunner, SlurmRunner
    from opencompass.tasks import OpenICLEvalTask, OpenICLInferTask

    model_cfgs = {m.name: model_config(m, cfg) for m in models}
    datasets: dict[str, dict] = {}
    combinations = []
    for model in models:
        chosen = []
        for bench, mode in benchmarks:
            dataset = dataset_config(bench, modes_for(model.kind, mode), cfg)
            datasets.setdefault(dataset["abbr"], dataset)
            chosen.append(dataset["abbr"])
        if chosen:
            combinations.append(dict(models=[model_cfgs[model.name]],
                                     datasets=[datasets[a] for a in chosen]))
        if tool_use is not None:
            # Every model answers the tool-use prompts through its chat template (an hf_model
            # always has one): a base model's score is the "before tuning" of the demo's table.
            dataset = tool_use_config(*tool_use, cfg)
            datasets.setdefault(dataset["abbr"], dataset)
            # (its own abbr: OpenCompass reuses a loaded model by abbr, which would keep the base
            # wrapper; the results name the model by what precedes the `@`)
            as_chat = model_cfgs[model.name] if model.kind in ("chat", "api") else model_config(
                ModelSpec(name=f"{model.name}@chat", kind="chat", path=model.path,
                          tokenizer=model.tokenizer), cfg)
            model_cfgs.setdefault(as_chat["abbr"], as_chat)
            combinations.append(dict(models=[as_chat], datasets=[dataset]))

    def runner(task: type) -> dict:
        if cfg.runner == "slurm":
            return dict(type=SlurmRunner, partition=cfg.slurm_partition,
                        max_num_workers=cfg.max_num_workers, retry=0, task=dict(type=task))
        return dict(type=LocalRunner, max_num_workers=cfg.max_num_workers,
                    debug=cfg.runner == "debug", task=dict(type=task))

    # In-process (debug) tasks run one after another anyway: one task per model holding all its
    # datasets. OpenCompass writes every task's config through yapf before running it (~1.8 s
    # per one-dataset task on this machine; 6 s for one holding 18), so one task per dataset
    # cost ~1 min of the 18-benchmark run. Subprocess and SLURM runners keep one task per
    # dataset, which is what they run in parallel.
    per_task = max(1, len(datasets)) if cfg.runner == "debug" else 1
    return dict(models=list(model_cfgs.values()), datasets=list(datasets.values()),
                model_dataset_combinations=combinations, work_dir=str(work_dir),
                infer=dict(partitioner=dict(type=NaivePartitioner, n=per_task), runner=runner(OpenICLInferTask)),
                eval=dict(partitioner=dict(type=NaivePartitioner, n=per_task), runner=runner(OpenICLEvalTask)))


# ---------------------------------------------------------------------------- config file


def _render(value: Any, imports: dict[str, str], indent: int = 0) -> str:
    pad = " " * indent
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        imports[value.__name__] = value.__module__
        return value.__name__
    if isinstance(value, dict):
        if not value:
            return "dict()"
        if all(isinstance(k, str) and k.isidentifier() for k in value):
            items = [f"{pad}    {k}={_render(v, imports, indent + 4)}," for k, v in value.items()]
            return "dict(\n" + "\n".join(items) + f"\n{pad})"
        items = [f"{pad}    {k!r}: {_render(v, imports, indent + 4)}," for k, v in value.items()]
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        items = [f"{pad}    {_render(v, imports, indent + 4)}," for v in value]
        return "[\n" + "\n".join(items) + f"\n{pad}]"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return repr(value)
    raise TypeError(f"cannot write {type(value).__name__} {value!r} into an OpenCompass config")


def render_config(config: dict[str, Any]) -> str:
    """An OpenCompass config file (what `opencompass <file>` reads) holding `config`."""
    imports: dict[str, str] = {}
    body = "\n\n".join(f"{key} = {_render(value, imports)}" for key, value in config.items())
    lines = [f"from {module} import {name}" for name, module in sorted(imports.items())]
    return "# Written by fullchain.eval (translate.render_config); run: opencompass <this file>\n" + \
        "\n".join(lines) + "\n\n" + body + "\n"


def template_hash(dataset: dict[str, Any]) -> str:
    """sha256 of a dataset's prompt template, reader and inferencer settings (classes by name)."""
    def plain(value: Any) -> Any:
        if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
            return f"{value.__module__}.{value.__qualname__}"
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    infer = plain(dataset.get("infer_cfg", {}))
    payload = {"infer_cfg": infer, "reader_cfg": plain(dataset.get("reader_cfg", {})),
               "eval_cfg": plain({k: v for k, v in dataset.get("eval_cfg", {}).items()})}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
