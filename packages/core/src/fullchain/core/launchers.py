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


class SlurmStepCommand:
    """What a step's SLURM job runs (pickled by submitit, called on every node of the job): the
    step's shell line, with its stdout/stderr appended to the artifact's `logs/` (a shared file
    system, like the artifact itself) and its exit status as the job's result.

    The environment is the runner's (its venv, the step token, the spec's `env.vars`), except
    what the job itself defines: SLURM's variables (node list, node id, job id), submitit's and
    the GPUs SLURM gave the job. A plain `env=` would replace the job's environment with the
    runner's, and `$SLURM_NODEID` / `$SLURM_JOB_NODELIST` of a multi-node torchrun would be empty
    (or the driver's own, for a driver that runs in a job itself)."""

    JOB_VARIABLES = ("SLURM", "SUBMITIT_", "CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                     "HIP_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "TMPDIR")

    def __init__(self, command: list[str], env: dict[str, str] | None = None,
                 stdout: str | None = None, stderr: str | None = None):
        self.command, self.env, self.stdout, self.stderr = command, env, stdout, stderr

    def job_environment(self, job_env: dict[str, str]) -> dict[str, str]:
        merged = {k: v for k, v in (self.env or {}).items() if not k.startswith(self.JOB_VARIABLES)}
        merged.update({k: v for k, v in job_env.items() if k.startswith(self.JOB_VARIABLES)})
        return merged if self.env is not None else dict(job_env)

    def __call__(self) -> int:
        import os

        env = self.job_environment(dict(os.environ))
        with open(self.stdout or os.devnull, "a") as out, open(self.stderr or os.devnull, "a") as err:
            return subprocess.run(self.command, env=env, stdin=subprocess.DEVNULL,
                                  stdout=out if self.stdout else None,
                                  stderr=err if self.stderr else None).returncode


class _OnceFilter:
    """submitit polls `sacct`, and warns on every call where SLURM keeps no accounting
    ("Bypassing sacct error"): a 30 s step printed it 10 times. The runner polls `squeue`
    itself; Hydra's submitit launcher (sweeps) polls through submitit. Either way the warning is
    shown once per process, not once per poll."""

    seen = False

    def filter(self, record) -> bool:
        if "sacct" not in record.getMessage():
            return True
        if _OnceFilter.seen:
            return False
        _OnceFilter.seen = True
        return True


def _quiet_repeated_sacct_warnings() -> None:
    import logging

    submitit_log = logging.getLogger("submitit")  # submitit's dictConfig keeps added filters
    if not any(isinstance(f, _OnceFilter) for f in submitit_log.filters):
        submitit_log.addFilter(_OnceFilter())


_quiet_repeated_sacct_warnings()  # at import: the CLI imports this before any sweep or step


def submit_slurm(launcher: LauncherConfig, stage: str, module: str, python: Path,
                 request: Path, folder: Path, job_name: str, env: dict,
                 logs: Path | None = None):
    """Submit one step as a SLURM job; returns the submitit Job. With `logs`, the step's
    stdout/stderr are appended to logs/stdout.log and logs/stderr.log (else they go to
    submitit's own log files in `folder`). sbatch refusing the job is a ConfigError quoting it."""
    if shutil.which("sbatch") is None:
        raise ConfigError("launcher.name: slurm, but `sbatch` is not on PATH: run on a SLURM "
                          "login node, or use launcher=local / launcher=torchrun here.")
    import submitit

    executor = submitit.SlurmExecutor(folder=str(folder), python=str(python))
    parameters = slurm_parameters(launcher, stage, job_name)
    executor.update_parameters(**parameters)
    shell = slurm_shell_command(launcher, stage, module, python, request)
    function = SlurmStepCommand(["bash", "-c", shell], env=env,
                                stdout=str(logs / "stdout.log") if logs else None,
                                stderr=str(logs / "stderr.log") if logs else None)
    try:
        return executor.submit(function)
    except submitit.core.utils.FailedJobError as exc:  # sbatch exited non-zero: its stderr
        said = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        asked = " ".join(f"{k}={v}" for k, v in parameters.items()
                         if k not in ("job_name", "setup", "additional_parameters"))
        raise ConfigError(
            f"launcher.slurm: sbatch refused the job of step {job_name}: {said}\n"
            f"  it asked for {asked}{slurm_offer()}; set launcher.slurm.* (cpus_per_task, "
            f"gpus_per_node, partition, ...) to what the cluster has") from exc


SLURM_FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                  "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT")
"""Job states after which a job does not run again (squeue's %T)."""

SLURM_NEVER_STARTS = {
    "PartitionConfig": "the request exceeds what the partition's nodes have",
    "PartitionNodeLimit": "more nodes than the partition allows",
    "PartitionTimeLimit": "a longer time limit than the partition allows",
    "BadConstraints": "constraints no node satisfies",
    "DependencyNeverSatisfied": "a dependency that can never be satisfied",
    "InvalidAccount": "an invalid account",
    "InvalidQOS": "an invalid QOS",
}
"""Pending reasons that persist until an administrator changes the cluster's configuration:
waiting on them is waiting forever. (`Resources`, `Priority`, `ReqNodeNotAvail`, the Assoc*/QOS
group limits: other jobs or nodes coming back can end them; those are waited on.)"""


@dataclass
class SlurmJobState:
    state: str
    """squeue's %T: PENDING, RUNNING, COMPLETING, COMPLETED, FAILED, CANCELLED, ..."""
    reason: str
    """squeue's %r: why it pends (Resources, Priority, PartitionConfig, ...), else None."""
    nodes: str

    @property
    def finished(self) -> bool:
        return self.state in SLURM_FINISHED

    @property
    def never_starts(self) -> bool:
        return self.state == "PENDING" and self.reason in SLURM_NEVER_STARTS

    def __str__(self) -> str:
        detail = self.reason if self.reason not in ("None", "") else self.nodes
        return f"{self.state} ({detail})" if detail else self.state


def slurm_job_state(job_id: str) -> SlurmJobState | None:
    """The job's state as the controller knows it (`squeue`, no accounting storage needed).
    None when the controller no longer knows the job (ended more than MinJobAge ago) or
    cannot be asked right now (the caller asks again later)."""
    try:
        done = subprocess.run(["squeue", "-h", "-j", str(job_id), "--states=all", "-o", "%T|%r|%N"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = done.stdout.strip().splitlines()[:1]
    if done.returncode != 0 or not line:
        return None
    state, reason, nodes = (line[0].split("|") + ["", ""])[:3]
    return SlurmJobState(state.strip(), reason.strip(), nodes.strip())


def slurm_offer() -> str:
    """What the cluster's partitions offer, for error messages (`sinfo`), or ''."""
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%P|%c|%G|%D"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    rows = [r.split("|") for r in done.stdout.split("\n") if r.count("|") == 3]
    if done.returncode != 0 or not rows:
        return ""
    return "; the cluster has " + ", ".join(
        f"partition {p}: {n} node(s) of {c} CPUs, gres {'none' if g in ('(null)', '') else g}"
        for p, c, g, n in rows)


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
