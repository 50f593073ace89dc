"""Environments (resolution, a real `env sync`, a step in that env) and launchers (torchrun for
real on this machine; SLURM: the job submitit would submit, checked without a cluster)."""
import json
import os
import shutil
from pathlib import Path

import pytest
from fullchain.core.config import ConfigError, to_dataclass
from fullchain.core.envs import env_for_stage, sync_commands
from fullchain.core.launchers import LauncherConfig, step_command
from spine_testing import CONF, fullchain

REPO = Path(__file__).resolve().parents[3]


def test_env_resolution_per_stage():
    node = {"default": "main", "stage_env": {"eval": "eval"},
            "envs": {"main": {"python": "/x/main/bin/python"}, "eval": {"python": "/x/eval/bin/python"}}}
    assert env_for_stage(node, "data").name == "main"
    assert env_for_stage(node, "eval").interpreter == Path("/x/eval/bin/python")
    node["stage_env"]["eval"] = "missing"
    with pytest.raises(ConfigError, match=r"env.stage_env.eval: environment 'missing' is not defined"):
        env_for_stage(node, "eval")


def test_repo_env_config_keeps_torch_on_cpu_and_splits_eval():
    from fullchain.core import spec as spec_mod

    real = spec_mod.materialize(spec_mod.to_spec(spec_mod.compose(REPO / "conf", [])))["env"]
    assert env_for_stage(real, "eval").name == "eval" and env_for_stage(real, "data").name == "main"
    for name in ("main", "eval"):
        from fullchain.core.envs import env_specs

        env = env_specs(real)[name]
        assert "torch==2.13.0" in (REPO / env.constraints).read_text()
        (install,) = [c for c in sync_commands(env, REPO, tool="uv") if "install" in c]
        assert "-c" in install and str(REPO / env.constraints) in install


def test_env_sync_builds_an_env_and_a_step_runs_in_it(project):
    if shutil.which("uv") is None:
        pytest.skip("uv not installed")
    venv = project / ".venvs" / "mini"
    overrides = [f"env.envs.current.python={venv}/bin/python",
                 f"+env.envs.current.packages=[{REPO / 'packages' / 'core'}]"]
    args = [a for o in overrides for a in ("--override", o)]
    synced = fullchain("env", "sync", "--conf", str(CONF), *args, timeout=600)
    assert (venv / "bin" / "python").is_file()
    # one line per environment; the installer's own output only on failure or with -v
    (line,) = synced.stderr.strip().splitlines()
    assert line.startswith(f"[fullchain] current: {REPO / 'packages' / 'core'} -> {venv}/bin/python (uv, ")
    assert "Installed" not in synced.stderr and "hydra-core" not in synced.stderr
    listing = fullchain("env", "list", "--conf", str(CONF), *args).stdout
    assert f"current: {venv}/bin/python" in listing and "fullchain-core: 0.1.0" in listing
    fullchain("run", "--conf", str(CONF), *overrides)
    (manifest,) = (project / "artifacts").glob("count/*/manifest.json")
    env = json.loads(manifest.read_text())["environment"]
    assert env["python"] == f"{venv}/bin/python" and "torch" not in env["packages"]


def test_torchrun_launcher_runs_a_stage_on_two_ranks(project):
    result = fullchain("run", "--conf", str(CONF), "launcher=torchrun",
                       "launcher.distributed_stages=[square]", "launcher.nproc_per_node=2")
    assert "running (torchrun" in result.stderr
    (manifest,) = (project / "artifacts").glob("square/*/manifest.json")
    data = json.loads(manifest.read_text())
    assert data["launcher"]["distributed"] is True
    assert "--nproc_per_node=2" in data["launcher"]["command"]
    stdout = (manifest.parent / "logs" / "stderr.log").read_text()
    assert "torch.distributed.run" in stdout


def test_torchrun_command_multinode():
    launcher = to_dataclass(LauncherConfig, {"name": "slurm", "nproc_per_node": 8, "nnodes": 4}, "launcher")
    cmd = step_command(launcher, "pretrain", "fullchain.pretrain", Path("/v/bin/python"), Path("/a/req.json"))
    assert cmd[:3] == ["/v/bin/python", "-m", "torch.distributed.run"]
    assert "--nnodes=4" in cmd and "--node_rank=$SLURM_NODEID" in cmd and "--standalone" not in cmd
    assert cmd[-3:] == ["-m", "fullchain.pretrain", "/a/req.json"]
    assert step_command(launcher, "data", "fullchain.data", Path("/v/bin/python"), Path("/r"))[:2] == [
        "/v/bin/python", "-m"]


def test_slurm_job_is_what_a_cluster_needs(tmp_path, monkeypatch):
    """Submitted through submitit with a stand-in `sbatch` on PATH (no cluster here): the sbatch
    file submitit really wrote, and the command its job really runs (the pickled function)."""
    import pickle

    from fullchain.core import spec as spec_mod
    from fullchain.core.launchers import submit_slurm

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("sbatch", 'echo "Submitted batch job 4242"'), ("srun", "exit 1")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")  # submitit only checks srun exists
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    spec = spec_mod.materialize(spec_mod.to_spec(spec_mod.compose(
        REPO / "conf", ["launcher=slurm", "launcher.nnodes=2", "launcher.slurm.partition=gpu",
                        "+launcher.slurm.additional={constraint: h100}"])))
    launcher = to_dataclass(LauncherConfig, spec["launcher"], "launcher")
    request = Path("/store/pretrain/abc/.fullchain/request.json")
    job = submit_slurm(launcher, ("sft", "tune"), "fullchain.tune", Path("/env/bin/python"), request,
                       tmp_path / "slurm", "fc-sft", env={"X": "1"})
    assert job.job_id == "4242"
    script = Path(job.paths.submission_file).read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu", "#SBATCH --constraint=h100", "#SBATCH --job-name=fc-sft",
                 "#SBATCH --time=2880"):
        assert line in script, line
    function = pickle.loads(Path(job.paths.submitted_pickle).read_bytes()).function
    shell = function.command[-1]
    assert function.command[:2] == ["bash", "-c"] and function.env == {"X": "1"}
    assert "torch.distributed.run --nproc_per_node=8 --nnodes=2 --node_rank=$SLURM_NODEID" in shell
    assert "-m fullchain.tune /store/pretrain/abc/.fullchain/request.json" in shell
    data_job = submit_slurm(launcher, "data", "fullchain.data", Path("/env/bin/python"), Path("/r.json"),
                            tmp_path / "slurm-data", "fc-data", env={})
    data_script = Path(data_job.paths.submission_file).read_text()
    assert "#SBATCH --nodes=1" in data_script and "gpus-per-node" not in data_script


def test_slurm_without_sbatch_is_a_clear_error(project):
    if shutil.which("sbatch"):
        pytest.skip("a real SLURM is here")
    result = fullchain("run", "--conf", str(CONF), "launcher=slurm", check=False)
    assert result.returncode == 2 and "`sbatch` is not on PATH" in result.stderr


def test_hydra_submitit_launcher_composes_for_sweeps():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from fullchain.core.spec import register_resolvers
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=submitit_slurm",
                                           "hydra.launcher.partition=gpu", "hydra.launcher.nodes=1"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.nodes == 1


def test_local_launcher_refuses_many_processes():
    with pytest.raises(ConfigError, match="launcher.name: launcher 'local' starts one process"):
        to_dataclass(LauncherConfig, {"name": "local", "nproc_per_node": 2}, "launcher")


def test_env_and_launcher_select_by_node_first_then_kind():
    from fullchain.core.launchers import is_distributed

    node = {"default": "main", "stage_env": {"tune": "train", "dpo": "rl"},
            "envs": {"main": {"python": "/m"}, "train": {"python": "/t"}, "rl": {"python": "/r"}}}
    assert env_for_stage(node, ("sft", "tune")).name == "train"   # by kind
    assert env_for_stage(node, ("dpo", "tune")).name == "rl"      # the node's own wins
    assert env_for_stage(node, ("chat", "data.chat")).name == "main"
    torchrun = LauncherConfig(name="torchrun", nproc_per_node=2, distributed_stages=["tune", "eval_big"])
    assert is_distributed(torchrun, ("dpo", "tune"))
    assert is_distributed(torchrun, ("eval_big", "eval")) and not is_distributed(torchrun, ("eval", "eval"))
