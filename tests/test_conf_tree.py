"""Every shipped config composes and converts to the stage dataclasses (litgpt's config-hub
test, for a Hydra tree): each experiment, and each option of each stage's group."""
from pathlib import Path

import pytest
from fullchain.core import spec as spec_mod
from fullchain.core.config import to_dataclass
from fullchain.core.graph import nodes_of
from fullchain.core.launchers import LauncherConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def compose(*overrides: str) -> dict:
    return spec_mod.materialize(spec_mod.to_spec(spec_mod.compose(CONF, list(overrides))))


def convert_all(spec: dict) -> dict:
    out = {}
    for name, node in nodes_of(spec).items():
        out[name] = to_dataclass(node.decl.config, spec[node.config_key], node.config_key)
    out["launcher"] = to_dataclass(LauncherConfig, spec["launcher"], "launcher")
    return out


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_converts(experiment, monkeypatch, tmp_path):
    monkeypatch.setenv("FULLCHAIN_SHARED_DATA", str(tmp_path))  # nothing is read while converting
    spec = compose(f"experiment={experiment}")
    configs = convert_all(spec)
    assert set(spec["stages"]) <= set(configs)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


GROUP_OPTIONS = [(g, o) for g in ("data", "chat_data", "tokenizer", "model", "parallel", "pretrain", "tune",
                                  "eval", "deploy", "agent", "launcher", "env", "benchmarks")
                 for o in _options(g)]


# Options that only make sense with a partner option (checked by the stage's own rules).
PARTNERS = {
    ("pretrain", "gpu"): ["model=internlm2_1_8b"],
    ("pretrain", "small"): ["model=small"],
}


@pytest.mark.parametrize("group, option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_group_option_converts(group, option):
    overrides = [f"{group}={option}", *PARTNERS.get((group, option), [])]
    if group == "tokenizer" and option == "pretrained":
        overrides.append("tokenizer.path=/some/tokenizer")
    convert_all(compose(*overrides))


def test_default_graph_covers_all_six_stages():
    spec = compose()
    assert list(spec["graph"]) == ["data", "chat_data", "pretrain", "tune", "eval", "deploy", "agent"]
    assert spec["graph"]["pretrain"]["inputs"] == {"corpus": "data"}
    assert spec["graph"]["chat_data"] == {"stage": "data.chat", "inputs": {"tokenizer": "data"}}
    assert spec["graph"]["eval"]["inputs"]["models"] == ["pretrain", "tune"]


def test_tiny_experiment_is_the_cpu_demo():
    spec = compose("experiment=tiny")
    assert spec["stages"] == ["data", "chat_data", "pretrain", "tune", "eval", "deploy", "agent"]
    assert spec["launcher"]["name"] == "local"


def test_one_benchmark_list_is_decontaminated_and_scored(monkeypatch, tmp_path):
    """The `benchmarks` group is interpolated into both stages: the data stage decontaminates
    against exactly the sets the eval stage scores, and the demo (no ../shared/data) has none."""
    monkeypatch.setenv("FULLCHAIN_SHARED_DATA", str(tmp_path))
    tiny = compose("experiment=tiny")
    assert tiny["benchmarks"] == tiny["data"]["decontamination"]["benchmarks"] == []
    assert tiny["chat_data"]["decontamination"]["benchmarks"] == []
    spec = compose("experiment=small_cpu")
    names = [b["name"] for b in spec["benchmarks"]]
    assert names == ["gsm8k", "arc_challenge", "boolq", "mmlu", "ceval", "cmmlu", "piqa", "copa",
                     "openbook_qa", "commonsense_qa", "winogrande", "truthfulqa_mc1", "truthfulqa_gen",
                     "humaneval", "hellaswag"]
    assert spec["data"]["decontamination"]["benchmarks"] == spec["eval"]["benchmarks"] == spec["benchmarks"]
    assert spec["chat_data"]["decontamination"]["benchmarks"] == spec["benchmarks"]
    configs = convert_all(spec)
    assert configs["data"].decontamination.benchmarks == configs["eval"].benchmarks
    assert all(b.path.startswith(str(tmp_path)) for b in configs["eval"].benchmarks)
