"""Graph nodes of a kind with role-named inputs, on the real config tree: two tune nodes (SFT
then DPO, one config each) and an eval over three models plan correctly, and are refused at run
time while tune and eval are planned stages; a wrong wiring is a config error naming the key."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fullchain.core import runner
from fullchain.core import spec as spec_mod
from fullchain.core.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
SFT_DPO_EVAL = [
    "experiment=tiny",
    "+tune@dpo=dpo",                                           # a second tune config under `dpo`
    "+chat_data@chat_dpo=dpo",                                 # preference pairs, a second data.chat
    "+graph.chat_dpo={stage: data.chat, inputs: {tokenizer: data}}",
    "+graph.dpo={stage: tune, inputs: {model: tune, conversations: chat_dpo}}",  # DPO on the SFT node
    "graph.eval.inputs.models=[pretrain,tune,dpo]",
    "stages=[eval]",
]


def cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, FULLCHAIN_STORE=str(tmp_path / "store"), FULLCHAIN_RUNS=str(tmp_path / "runs"))
    return subprocess.run([sys.executable, "-m", "fullchain.core.cli", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)


def plan(*overrides: str, tmp_path: Path):
    os.environ["FULLCHAIN_STORE"] = str(tmp_path / "store")
    try:
        return runner.plan(spec_mod.to_spec(spec_mod.compose(REPO / "conf", list(overrides))))
    finally:
        del os.environ["FULLCHAIN_STORE"]


def test_two_tune_nodes_and_an_eval_over_three_models_plan(tmp_path):
    result = cli("plan", *SFT_DPO_EVAL, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    assert "dpo (tune) [input]" in result.stdout
    _, steps = plan(*SFT_DPO_EVAL, tmp_path=tmp_path)
    by = {s.name: s for s in steps}
    assert [s.name for s in steps] == ["data", "pretrain", "chat_data", "tune", "chat_dpo", "dpo", "eval"]
    assert by["dpo"].kind == by["tune"].kind == "tune"
    assert by["dpo"].config.method == "dpo" and by["tune"].config.method == "sft"
    assert by["dpo"].inputs["conversations"] is by["chat_dpo"] and by["chat_dpo"].config.format == "preference"
    assert by["chat_dpo"].kind == by["chat_data"].kind == "data.chat"
    assert by["dpo"].step_id != by["tune"].step_id
    assert by["dpo"].path.parent == by["tune"].path.parent == tmp_path / "store" / "tune"
    assert [s.name for s in by["eval"].inputs["models"]] == ["pretrain", "tune", "dpo"]
    assert f"models:dpo@{by['dpo'].step_id[:8]}" in rows["eval"]
    # the order of a many-role is part of the id: the table's columns follow it
    _, swapped = plan(*SFT_DPO_EVAL[:5], "graph.eval.inputs.models=[pretrain,dpo,tune]",
                      "stages=[eval]", tmp_path=tmp_path)
    assert swapped[-1].step_id != by["eval"].step_id
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("manifest.json"))


@pytest.mark.parametrize("overrides, message", [
    (["graph.eval.inputs={models: [pretrain, data]}", "stages=[eval]"],
     r"graph.eval.inputs.models: takes a hf_model artifact, but node 'data' \(stage data\) "
     r"provides \['packed_corpus', 'tokenizer'\]"),
    (["graph.tune.inputs={model: pretrain}", "++pretrain.export_hf=false", "stages=[tune]"],
     r"graph.tune.inputs.model: takes a hf_model artifact, but node 'pretrain' \(stage pretrain\) "
     r"provides \['megatron_checkpoint'\]"),
    (["++graph.pretrain.inputs.data=data"],
     r"graph.pretrain.inputs.data: stage 'pretrain' has no role 'data'; its roles: \['corpus'\]"),
    (["~graph.pretrain.inputs", "+graph.pretrain.inputs=[data]"], r"graph.pretrain.inputs: inputs are named by role now"),
    (["~graph.pretrain.inputs"], r"graph.pretrain.inputs.corpus: required role of stage 'pretrain'"),
    (["graph.deploy.inputs.model=[tune,pretrain]", "stages=[deploy]"],
     r"graph.deploy.inputs.model: takes one node"),
    (["+graph.pretrain.module=fullchain.tune"],
     r"graph.pretrain.stage: 'pretrain', but fullchain.tune.config declares the kind 'tune'"),
    (["+graph.pretrain.config=nowhere"], r"pretrain: the spec has no 'nowhere' node"),
    (["stages=[sft]"], r"stages: 'sft' is not a node of the graph"),
], ids=["wrong-type", "type-by-config", "unknown-role", "list-form", "missing-role", "one-not-many",
        "kind-mismatch", "config-key", "unknown-node"])
def test_wrong_wiring_is_a_config_error_before_anything_runs(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        plan("experiment=tiny", *overrides, tmp_path=tmp_path)


def test_checks_that_need_the_world_size_fail_at_plan(tmp_path):
    with pytest.raises(ConfigError, match=r"pretrain.parallel.tensor_parallel_size: .* does not divide "
                                          r"the world size 1 .*launcher=torchrun"):
        plan("experiment=tiny", "parallel=tp2", tmp_path=tmp_path)
    with pytest.raises(ConfigError, match=r"pretrain.batch.global_batch_size: 8 is not divisible by "
                                          r"micro_batch_size \* data_parallel_size = 4 \* 4"):
        plan("experiment=tiny", "launcher=torchrun", "launcher.nproc_per_node=4", tmp_path=tmp_path)
    _, steps = plan("experiment=tiny_tp2", tmp_path=tmp_path)
    assert steps[-1].placement["world_size"] == 2


def test_auto_values_are_resolved_before_hashing(tmp_path):
    """A CPU fp32 artifact and a GPU bf16 one of the same spec must not share an id."""
    from fullchain.core import graph
    from fullchain.core.placement import Placement

    spec = spec_mod.materialize(spec_mod.to_spec(spec_mod.compose(REPO / "conf", ["experiment=tiny"])))
    cpu = Placement(world_size=1, accelerator="cpu", device_count=0, transformer_engine=False)
    gpu = Placement(world_size=1, accelerator="cuda", device_count=1, transformer_engine=False)
    gpu_te = Placement(world_size=1, accelerator="cuda", device_count=1, transformer_engine=True)
    built = {name: {s.name: s for s in graph.build(spec, tmp_path, placements=lambda node, p=p: p)}
             for name, p in (("cpu", cpu), ("gpu", gpu), ("gpu_te", gpu_te))}
    resolved = {name: (b["pretrain"].config.precision, b["pretrain"].config.parallel.backend,
                       b["pretrain"].config.transformer_impl) for name, b in built.items()}
    assert resolved == {"cpu": ("fp32", "gloo", "local"), "gpu": ("bf16", "nccl", "local"),
                        "gpu_te": ("bf16", "nccl", "transformer_engine")}
    ids = {name: b["pretrain"].step_id for name, b in built.items()}
    assert len(set(ids.values())) == 3
    assert built["cpu"]["data"].step_id == built["gpu"]["data"].step_id  # nothing auto in data
    assert built["gpu"]["pretrain"].placement["accelerator"] == "cuda"
    # written explicitly, the resolved value gives the same id as auto did on that hardware
    explicit = spec_mod.materialize(spec_mod.to_spec(spec_mod.compose(
        REPO / "conf", ["experiment=tiny", "++pretrain.precision=fp32", "++parallel.backend=gloo",
                        "++pretrain.transformer_impl=local"])))
    again = {s.name: s for s in graph.build(explicit, tmp_path, placements=lambda node: cpu)}
    assert again["pretrain"].step_id == ids["cpu"]


def test_planning_loads_only_the_declarations_on_the_path(tmp_path):
    """`experiment=tiny stages=[data,chat_data,pretrain]` must not need the eval (or tune, deploy,
    agent) package: an environment that lacks them plans and runs the corpus, conversation and
    pretraining steps."""
    script = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[:2] in (['fullchain', s] for s in ('tune', 'eval', 'deploy', 'agent')):\n"
        "            raise ImportError(f'{name} is not installed in this environment')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from fullchain.core import runner, spec\n"
        f"s = spec.to_spec(spec.compose(spec.Path({str(REPO / 'conf')!r}), ['experiment=tiny', \n"
        "    'stages=[data,chat_data,pretrain]']))\n"
        "_, steps = runner.plan(s)\n"
        "print([st.name for st in steps])\n"
    )
    env = dict(os.environ, FULLCHAIN_STORE=str(tmp_path / "store"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['data', 'chat_data', 'pretrain']"
