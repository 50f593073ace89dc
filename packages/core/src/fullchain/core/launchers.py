"""How a step's process is started: the `launcher/` config group.

- local:    one subprocess per step (`python -m fullchain.<stage> request.json`).
- torchrun: stages listed in `distributed_stages` run under `torchrun --nproc_per_node N`
            (several processes on this machine: tensor/pipeline/data parallel training).
- slurm:    each step is a SLURM job submitted through submitit (the engine behind Hydra's
            submitit launcher); distributed stages run torchrun on every node of the job.
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fullchain.core.config import ConfigError


@dataclass
class SlurmConfig:
    partition: str | None = None
    """SLURM partition (sbatch --partition)."""
    account: str | None = None
    """Account to charge (sbatch --account)."""
    qos: str | None = None
    """Quality of service (sbatch --qos)."""
    timeout_min: int = 1440
    """Wall-clock limit of each step's job, minutes."""
    gpus_per_node: int | None = None
    """GPUs per node (sbatch --gpus-per-node); None on CPU partitions."""
    cpus_per_task: int | None = None
    """CPUs per task (sbatch --cpus-per-task)."""
    mem_gb: int | None = None
    """Memory per node in GB."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run before the step (module load ..., source venv)."""
    additional: dict[str, str] = field(default_factory=dict)
    """Any other sbatch option, e.g. {constraint: h100}."""


@dataclass
class LauncherConfig:
    name: Literal["local", "torchrun", "slurm"] = "local"
    """Which launcher starts step processes."""
    distributed_stages: list[str] = field(default_factory=lambda: ["pretrain", "tune"])
    """Nodes or stage kinds whose process is a torchrun group (others run as one process)."""
    nproc_per_node: int = 1
    """Processes per node for distributed stages (= GPUs per node on a GPU cluster)."""
    nnodes: int = 1
    """Nodes for distributed stages (slurm: nodes per job)."""
    master_port: int = 29500
    """Rendezvous port on the first node (multi-node)."""
    poll_seconds: float = 0.2
    """How often the runner checks a running step (progress display, cluster job state)."""
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    """sbatch parameters, used by name=slurm."""

    def __post_init__(self):
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise ValueError("nproc_per_node: nproc_per_node and nnodes must be >= 1")
        if self.name == "local" and (self.nproc_per_node > 1 or self.nnodes > 1):
            raise ValueError("name: launcher 'local' starts one process per step; use "
                             "launcher=torchrun for nproc_per_node > 1")


def _listed(launcher: LauncherConfig, stage: str | tuple[str, ...]) -> bool:
    """`stage` (a name, or a step's (node, kind) names) is in `distributed_stages`."""
    names = (stage,) if isinstance(stage, str) else stage
    return any(name in launcher.distributed_stages for name in names)


def is_distributed(launcher: LauncherConfig, stage: str | tuple[str, ...]) -> bool:
    return (launcher.name != "local" and _listed(launcher, stage)
            and launcher.nproc_per_node * launcher.nnodes > 1)


def step_command(launcher: LauncherConfig, stage: str, module: str, python: Path,
                 request: Path) -> list[str]:
    """The argv of one step's process (on one node, for multi-node jobs)."""
    program = ["-m", module, str(request)]
    if not is_distributed(launcher, stage):
        return [str(python), *program]
    torchrun = [str(python), "-m", "torch.distributed.run",
                f"--nproc_per_node={launcher.nproc_per_node}"]
    if launcher.nnodes == 1:
        torchrun.append("--standalone")
    else:
        # filled in by the job's shell on each node (see slurm_shell_command)
        torchrun += [f"--nnodes={launcher.nnodes}", "--node_rank=$SLURM_NODEID",
                     "--rdzv_backend=c10d", "--rdzv_id=$SLURM_JOB_ID",
                     f"--rdzv_endpoint=$MASTER_ADDR:{launcher.master_port}"]
    return torchrun + program


def slurm_parameters(launcher: LauncherConfig, stage: str, job_name: str) -> dict:
    """submitit SlurmExecutor parameters for one step's job."""
    s = launcher.slurm
    distributed = _listed(launcher, stage)
    params = {
        "job_name": job_name,
        "time": s.timeout_min,
        "nodes": launcher.nnodes if distributed else 1,
        "ntasks_per_node": 1,  # one torchrun (or one stage process) per node
        "setup": list(s.setup),
    }
    for key, value in (("partition", s.partition), ("account", s.account), ("qos", s.qos),
                       ("cpus_per_task", s.cpus_per_task),
                       ("gpus_per_node", s.gpus_per_node if distributed else None),
                       ("mem", f"{s.mem_gb}GB" if s.mem_gb else None)):
        if value is not None:
            params[key] = value
    if s.additional:
        params["additional_parameters"] = dict(s.additional)
    return params


def slurm_shell_command(launcher: LauncherConfig, stage: str, module: str, python: Path,
                        request: Path) -> str:
    """What every task of the job runs: find the first node, then the step command."""
    argv = step_command(launcher, stage, module, python, request)
    line = " ".join(a if "$" in a else shlex.quote(a) for a in argv)
    return ('export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1); '
            + line)


def submit_slurm(launcher: LauncherConfig, stage: str, module: str, python: Path,
                 request: Path, folder: Path, job_name: str, env: dict):
    """Submit one step as a SLURM job; returns the submitit Job."""
    if shutil.which("sbatch") is None:
        raise ConfigError("launcher.name: slurm, but `sbatch` is not on PATH: run on a SLURM "
                          "login node, or use launcher=local / launcher=torchrun here.")
    import submitit

    executor = submitit.SlurmExecutor(folder=str(folder), python=str(python))
    executor.update_parameters(**slurm_parameters(launcher, stage, job_name))
    shell = slurm_shell_command(launcher, stage, module, python, request)
    return executor.submit(submitit.helpers.CommandFunction(["bash", "-c", shell], env=env))


def cancel_slurm(job_ids: list[str], command: tuple[str, ...] = ("scancel",)) -> list[str]:
    """Cancel SLURM jobs (what submitit's Job.cancel runs, with a timeout and a clear error).
    `command` is the program and its leading arguments. Returns the argv that ran; raises
    RuntimeError when it fails, naming the command to run by hand."""
    argv = [*command, *map(str, job_ids)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"could not cancel SLURM job(s) {' '.join(map(str, job_ids))} "
                           f"({exc}); cancel by hand: {shlex.join(argv)}") from exc
    if done.returncode != 0:
        raise RuntimeError(f"`{shlex.join(argv)}` exited {done.returncode}: "
                           f"{done.stderr.strip() or done.stdout.strip()}")
    return argv
