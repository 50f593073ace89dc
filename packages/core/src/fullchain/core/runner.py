"""The runner: walk the graph, reuse complete steps, run the rest, write manifests last."""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from fullchain.core import graph as graph_mod
from fullchain.core import procs, services
from fullchain.core.artifact import MANIFEST, ArtifactError, read_manifest, write_json_atomic
from fullchain.core.config import ConfigError, to_dataclass
from fullchain.core.envs import check_interpreter, env_for_stage
from fullchain.core.hashing import ContentHasher, digest
from fullchain.core.launchers import (
    SLURM_NEVER_STARTS,
    LauncherConfig,
    cancel_slurm,
    is_distributed,
    slurm_job_state,
    slurm_offer,
    slurm_parameters,
    step_command,
    submit_slurm,
)
from fullchain.core.placement import Placement, placement_for
from fullchain.core.spec import dump_spec, materialize
from fullchain.core.worker import CONTROL_DIR, REQUEST, RESULT

log = logging.getLogger("fullchain")


class StepFailed(RuntimeError):
    """A stage process failed; its artifact stays incomplete (no manifest)."""


@dataclass
class RunReport:
    run_dir: Path
    steps: list[dict] = field(default_factory=list)

    @property
    def ran(self) -> list[str]:
        return [s["stage"] for s in self.steps if s["status"] == "ran"]

    @property
    def reused(self) -> list[str]:
        return [s["stage"] for s in self.steps if s["status"] == "reused"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def git_state(root: Path) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain"],
                                    capture_output=True, text=True, timeout=30).stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def plan(spec_doc: dict) -> tuple[dict, list[graph_mod.Step]]:
    """Materialize the spec on this machine and build the graph. Runs nothing."""
    spec = materialize(spec_doc)
    paths = spec.get("paths") or {}
    for key in ("store", "runs"):
        if key not in paths:
            raise ConfigError(f"paths.{key}: missing (conf/paths/*.yaml)")
    cache = paths.get("cache")
    hasher = ContentHasher(Path(cache) / "content-hashes.json" if cache else None)
    launcher = to_dataclass(LauncherConfig, spec.get("launcher") or {}, "launcher")

    def placements(node: graph_mod.Node) -> Placement:
        names = (node.name, node.kind)
        env = env_for_stage(spec.get("env") or {}, names) if (spec.get("env") or {}).get("envs") else None
        return placement_for(launcher, names, env.interpreter if env else None,
                             is_distributed(launcher, names))

    steps = graph_mod.build(spec, Path(paths["store"]), hasher, placements)
    return spec, steps


def check_runnable(spec: dict, steps: list[graph_mod.Step]) -> None:
    """Everything that can fail before a step starts fails here, together."""
    for step in steps:
        if step.status != "cached" and step.selected:
            _check_implemented(step)
    for step in steps:
        if step.status == "cached":
            continue
        if not step.selected:
            raise ConfigError(
                f"stage '{step.name}' is an input of the selected stages but its artifact is not "
                f"in the store (step {step.step_id}, {step.path}: {step.reason}). Add it to the "
                f"run, e.g. stages=[{','.join(s.name for s in steps if s.selected or s is step)}]."
            )
        check_interpreter(env_for_stage(spec["env"], step.names), step.name)


def _check_implemented(step: graph_mod.Step) -> None:
    """A planned stage (config schema only, no `run` yet) is refused before anything starts.
    Stage packages import nothing heavy at import time, so this import is cheap."""
    import importlib

    try:
        module = importlib.import_module(step.stage.module)
    except ImportError:
        return  # not importable here: it may live only in its own environment; the worker checks
    if not callable(getattr(module, "run", None)):
        raise ConfigError(
            f"stages: '{step.name}' is a planned stage: {step.stage.module} has its config schema "
            f"but no run() yet, so it cannot be run. Remove it from `stages`."
        )


def execute(spec_doc: dict, progress: bool | None = None) -> RunReport:
    run_started, run_started_at = time.time(), _now()
    spec, steps = plan(spec_doc)
    launcher = to_dataclass(LauncherConfig, spec.get("launcher") or {}, "launcher")
    check_runnable(spec, steps)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    run_dir = Path(spec["paths"]["runs"]) / f"{stamp}-{digest(spec_doc, 8)}"
    dump_spec(spec_doc, run_dir / "spec.yaml")
    log.info("spec: %s", run_dir / "spec.yaml")
    report = RunReport(run_dir=run_dir)
    git = git_state(Path(spec["paths"].get("root", ".")))
    progress = sys.stderr.isatty() if progress is None else progress
    serving: dict[str, services.Running] = {}
    last_use = _last_service_use(steps)
    try:
        for index, step in enumerate(steps):
            if step.status == "cached":
                _record(report, step, "reused", 0.0)
                continue
            step.urls = _serve_for(step, serving, spec, run_dir)
            started = time.time()
            status = _run_step(spec, step, launcher, git, progress, run_dir)
            _record(report, step, status, time.time() - started)
            for node in [n for n, last in last_use.items() if last == index and n in serving]:
                services.stop(serving.pop(node))
    finally:
        # a failed step, Ctrl-C or SIGTERM: no server outlives the run
        for running in serving.values():
            services.stop(running)
        # wall time of plan + steps (what `fullchain report` compares for the reuse ratio)
        write_json_atomic(run_dir / "run.json", {"spec": "spec.yaml", "steps": report.steps,
                                                 "started_at": run_started_at, "ended_at": _now(),
                                                 "seconds": round(time.time() - run_started, 3)})
    summary = f"{len(report.ran)} step(s) ran, {len(report.reused)} reused"
    if not report.ran:
        summary += " — every step was reused from the store"
    log.info("%s (run record: %s)", summary, run_dir / "run.json")
    _print_summary(run_dir)
    return report


def _print_summary(run_dir: Path) -> None:
    """The demo's summary table (`fullchain report`'s, '-' where this run has no such number)
    on stdout at the end of a run. A run record it cannot read is a warning, not a failed run."""
    from fullchain.core.report import format_summary, from_run_dir, summary_rows

    try:
        table = format_summary(summary_rows(from_run_dir(run_dir)))
    except (ArtifactError, OSError, ValueError) as exc:
        log.warning("no summary table: %s", exc)
        return
    print(f"{table}\n(the full page: fullchain report {run_dir})", flush=True)


def _last_service_use(steps: list[graph_mod.Step]) -> dict[str, int]:
    """Service node -> index of the last step to run that talks to it (stop it after that)."""
    last: dict[str, int] = {}
    for index, step in enumerate(steps):
        if step.status == "cached":
            continue
        for role, upstream in step.input_steps():
            if step.stage.inputs[role].serve:
                last[upstream.name] = index
    return last


def _process_env(spec: dict) -> dict[str, str]:
    """The environment of every process the runner starts (steps and servers): its own, plus
    the spec's `env.vars`."""
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (spec["env"].get("vars") or {}).items()})
    return env


def _serve_for(step: graph_mod.Step, serving: dict[str, services.Running], spec: dict,
               run_dir: Path) -> dict[str, str | list[str]]:
    """Start (once per run) the servers of the step's serve roles; their URLs by role."""
    env = _process_env(spec)
    urls: dict[str, str | list[str]] = {}
    for role, value in step.inputs.items():
        if not step.stage.inputs[role].serve:
            continue
        found = []
        for upstream in value if isinstance(value, list) else [value]:
            if upstream.name not in serving:
                serving[upstream.name] = services.start(
                    upstream.name, upstream.path, run_dir / "services" / upstream.name, env)
            found.append(serving[upstream.name].url)
        urls[role] = found if isinstance(value, list) else found[0]
    return urls


def _record(report: RunReport, step: graph_mod.Step, status: str, seconds: float) -> None:
    report.steps.append({"stage": step.name, "step_id": step.step_id, "status": status,
                         "seconds": round(seconds, 3), "path": str(step.path)})
    detail = f"{seconds:7.1f}s" if status == "ran" else "  cached"
    log.info("%-9s %s  %-7s %s  %s", step.name, step.step_id, status, detail, step.path)


PIDS = "pids.json"
"""In a step's control dir: the runner, the step's first process, its token (and SLURM job)."""


def _run_step(spec: dict, step: graph_mod.Step, launcher: LauncherConfig, git: dict,
              progress: bool, run_dir: Path) -> str:
    step.path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(step.path) + ".lock")
    try:
        lock.acquire(timeout=0.5)
    except Timeout:
        log.info("%-9s %s  waiting: another run holds %s", step.name, step.step_id, lock.lock_file)
        lock.acquire()
    try:
        token = procs.step_token(step.path)
        # The lock (flock) dies with its runner, but the step's processes may not have: the
        # lock only means "no other run" once they are gone too.
        _stop_orphans(step, token)
        forced = step.name in set(spec.get("force") or [])
        if not forced and (_complete(step.path, step.step_id) or _restore_interrupted_force(step)):
            return "reused"  # another run finished it while we waited for the lock
        request = _request(step)
        backup = _prepare_dir(step, request, forced)
        try:
            status = _launch(spec, step, launcher, git, progress, run_dir, request, token)
        except BaseException as exc:
            if backup is None:
                raise
            moved = _put_back(step, backup, run_dir)
            if isinstance(exc, StepFailed):
                raise StepFailed(
                    f"{str(exc).splitlines()[0]}\n  force=[{step.name}]: this attempt failed, so "
                    f"the earlier complete artifact is back in place at {step.path}; the failed "
                    f"attempt was moved to {moved} (traceback in {moved / 'logs' / 'stderr.log'})"
                ) from exc
            raise
        if backup is not None:
            shutil.rmtree(backup)
        return status
    finally:
        lock.release()


def _complete(path: Path, step_id: str) -> bool:
    """A manifest that parses and names this step (a corrupt one is not complete)."""
    try:
        manifest = read_manifest(path)
    except ArtifactError:
        return False
    return manifest is not None and manifest.get("step_id") == step_id


def _stop_orphans(step: graph_mod.Step, token: str) -> None:
    """Stop what a dead runner left of this step: local processes by token, and the SLURM job
    its pid file records (a runner killed by SIGKILL could not cancel it)."""
    pids = procs.terminate(token)
    if pids:
        log.warning("%-9s %s  stopped %d process(es) of an earlier run of this step that outlived "
                    "their runner (pids %s)", step.name, step.step_id, len(pids),
                    " ".join(map(str, pids)))
    record = procs.read_pid_file(step.path / CONTROL_DIR / PIDS) or {}
    if record.get("slurm_job_id") and record.get("state") == "running":
        job_id = str(record["slurm_job_id"])
        try:
            cancel_slurm([job_id])
            log.warning("%-9s %s  cancelled SLURM job %s of an earlier run of this step whose "
                        "runner died", step.name, step.step_id, job_id)
        except RuntimeError as exc:
            log.warning("%-9s %s  %s", step.name, step.step_id, exc)
        _mark_ended(step.path / CONTROL_DIR / PIDS)


def _request(step: graph_mod.Step) -> dict:
    """What the worker reads. Also what decides whether a later attempt may resume this one's
    partial state (see _prepare_dir), so it names the step's code and inputs too."""

    def paths(role, value):
        if role in step.urls:  # a started service: its directory and its base URL
            if isinstance(value, list):
                return [{"path": str(s.path), "url": u} for s, u in zip(value, step.urls[role])]
            return {"path": str(value.path), "url": step.urls[role]}
        return [str(s.path) for s in value] if isinstance(value, list) else str(value.path)

    def ids(value):
        return [s.step_id for s in value] if isinstance(value, list) else value.step_id

    return {
        "stage": step.kind, "node": step.name, "module": step.stage.module,
        "config_class": step.stage.config_class, "outputs": step.stage.outputs_for(step.config),
        "step_id": step.step_id, "code_version": step.code_version, "config": step.config_dict,
        "out": str(step.path),
        "inputs": {role: paths(role, v) for role, v in step.inputs.items()},
        "input_ids": {role: ids(v) for role, v in step.inputs.items()},
    }


def _prepare_dir(step: graph_mod.Step, request: dict, forced: bool) -> Path | None:
    """Make `step.path` fit to run in. Returns where an earlier complete artifact was moved
    aside (forced runs), to delete after success or put back after a failure.

    - forced: the run starts from an empty directory (a stage that resumes would otherwise find
      its final checkpoint or its "completed" markers and recompute nothing);
    - an incomplete directory (a failed or killed attempt) is resumed only if its request names
      the same step, code and inputs; fields that are not hashed (workers, log intervals) may
      differ, since they do not change the output, and a retry often changes exactly those.
      Anything else starts clean."""
    path = step.path
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    if forced:
        if _complete(path, step.step_id):
            backup = path.with_name(f"{path.name}.old-{stamp}")
            os.rename(path, backup)
            log.info("%-9s %s  force: the complete artifact is set aside at %s until this run "
                     "succeeds", step.name, step.step_id, backup)
            return backup
        if path.exists():
            log.info("%-9s %s  force: deleting the incomplete directory %s", step.name,
                     step.step_id, path)
            shutil.rmtree(path)
        return None
    if not path.exists():
        return None
    previous = _read_json(path / CONTROL_DIR / REQUEST)
    keys = ("step_id", "module", "code_version", "input_ids")
    if previous is None or any(previous.get(k) != request[k] for k in keys):
        differs = "no readable request" if previous is None else "different " + ", ".join(
            k for k in keys if previous.get(k) != request[k])
        log.info("%-9s %s  starting clean: the incomplete directory was made by another "
                 "request (%s)", step.name, step.step_id, differs)
        shutil.rmtree(path)
        return None
    changed = sorted(k for k in set(previous.get("config", {})) | set(request["config"])
                     if previous.get("config", {}).get(k) != request["config"].get(k))
    log.info("%-9s %s  resuming the incomplete attempt in %s%s", step.name, step.step_id, path,
             f" (changed fields that do not affect the output: {', '.join(changed)})"
             if changed else "")
    return None


def _restore_interrupted_force(step: graph_mod.Step) -> bool:
    """A forced run killed before it finished leaves the earlier complete artifact at
    `<id>.old-*`: put it back (a forced run that did not finish loses nothing complete)."""
    backups = sorted(p for p in step.path.parent.glob(f"{step.path.name}.old-*") if _complete(p, step.step_id))
    if not backups:
        return False
    if step.path.exists():
        shutil.rmtree(step.path)
    os.rename(backups[-1], step.path)
    for extra in backups[:-1]:
        shutil.rmtree(extra)
    log.info("%-9s %s  restored the complete artifact set aside by an interrupted forced run",
             step.name, step.step_id)
    return True


def _put_back(step: graph_mod.Step, backup: Path, run_dir: Path) -> Path:
    """After a failed forced run: the failed attempt goes to the run's record (for its logs),
    the earlier complete artifact back into place. Returns where the failed attempt went."""
    moved = run_dir / "failed" / f"{step.name}-{step.step_id}"
    moved.parent.mkdir(parents=True, exist_ok=True)
    if step.path.exists():
        shutil.move(str(step.path), str(moved))
    os.rename(backup, step.path)
    log.info("%-9s %s  force: this attempt did not finish; the earlier complete artifact is back "
             "at %s", step.name, step.step_id, step.path)
    return moved


def _read_json(path: Path) -> dict | None:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _launch(spec: dict, step: graph_mod.Step, launcher: LauncherConfig, git: dict,
            progress: bool, run_dir: Path, request: dict, token: str) -> str:
    out = step.path
    control = out / CONTROL_DIR
    control.mkdir(parents=True, exist_ok=True)
    (control / RESULT).unlink(missing_ok=True)
    env_spec = env_for_stage(spec["env"], step.names)
    python = check_interpreter(env_spec, step.name)
    write_json_atomic(control / REQUEST, request)
    command = step_command(launcher, step.names, step.stage.module, python, control / REQUEST)
    env = _process_env(spec)
    env["PYTHONUNBUFFERED"] = "1"
    env[procs.TOKEN_VAR] = token  # inherited by every process of the step, however started
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    started_at, started = _now(), time.time()
    log.info("%-9s %s  running (%s, env %s): %s", step.name, step.step_id,
             "torchrun" if is_distributed(launcher, step.names) else launcher.name, env_spec.name,
             out)
    slurm_job_id = None
    if launcher.name == "slurm":
        returncode, slurm_job_id = _run_slurm(step, launcher, python, control, env, token, logs,
                                              progress, command)
    else:
        returncode = _run_local(step, command, env, logs, progress, launcher.poll_seconds, token)
    if returncode != 0:
        raise StepFailed(_failure_message(step, returncode, logs))
    result_file = control / RESULT
    if not result_file.is_file():
        raise StepFailed(f"stage '{step.name}' (step {step.step_id}) exited 0 but wrote no "
                         f"{result_file}; its artifact is left incomplete. Logs: {logs}")
    import json

    result = json.loads(result_file.read_text())
    ended = time.time()
    manifest = {
        "stage": step.kind,
        "node": step.name,
        "step_id": step.step_id,
        "config": step.config_dict,
        "hash_payload": step.payload,
        "code_version": step.code_version,
        "inputs": {role: [_input_record(s) for s in v] if isinstance(v, list) else _input_record(v)
                   for role, v in step.inputs.items()},
        "contracts": result.get("contracts", {}),
        "checksums": result.get("checksums", {}),
        "placement": step.placement,
        "environment": {"name": env_spec.name, **result.get("environment", {})},
        "launcher": {"name": launcher.name, "distributed": is_distributed(launcher, step.names),
                     "command": command,
                     **({"slurm_job_id": slurm_job_id} if slurm_job_id else {})},
        "git": git,
        "host": socket.gethostname(),
        "started_at": started_at,
        "ended_at": _now(),
        "duration_s": round(ended - started, 3),
        "metrics": result.get("metrics", {}),
        "run": str(run_dir),
    }
    write_json_atomic(out / MANIFEST, manifest)  # LAST: from here on the step is complete
    return "ran"


def _input_record(step: graph_mod.Step) -> dict:
    return {"step_id": step.step_id, "path": str(step.path), "stage": step.kind, "node": step.name}


def _run_local(step, command, env, logs: Path, progress: bool, poll: float, token: str) -> int:
    header = f"\n===== {_now()} {' '.join(command)}\n"
    pid_file = step.path / CONTROL_DIR / PIDS
    with open(logs / "stdout.log", "a") as stdout, open(logs / "stderr.log", "a") as stderr:
        stdout.write(header)
        stderr.write(header)
        stdout.flush()
        stderr.flush()
        # Its own session: Ctrl-C in the terminal reaches the runner only, which then stops the
        # step's processes in order. The death signal covers a runner that cannot (SIGKILL).
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   preexec_fn=procs.die_with_parent())
        procs.write_pid_file(pid_file, token, process.pid, step_id=step.step_id, state="running",
                             command=command)
        display = _Progress(step, logs / "stderr.log", progress)
        try:
            while process.poll() is None:
                display.update()
                time.sleep(poll)
        except BaseException:
            display.close()
            _stop_step(step, token, process)
            raise
        finally:
            display.close()
            _mark_ended(pid_file)
        # The stage exited; a helper it leaked must not write into the artifact after this.
        leaked = procs.terminate(token)
        if leaked:
            log.warning("%-9s %s  stopped %d process(es) the stage left running (pids %s)",
                        step.name, step.step_id, len(leaked), " ".join(map(str, leaked)))
        return process.returncode


def _stop_step(step, token: str, process: subprocess.Popen | None) -> None:
    """Interrupted: stop every process of the step (SIGTERM, grace, SIGKILL) before going."""
    log.warning("%-9s %s  interrupted: stopping the step's processes (SIGTERM, SIGKILL after "
                "%.0fs)", step.name, step.step_id, procs.GRACE_SECONDS)
    pids = procs.terminate(token)
    if process is not None:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    log.warning("%-9s %s  stopped %d process(es); the step is left incomplete (no manifest) "
                "and is redone by the next run: %s", step.name, step.step_id, len(pids), step.path)


def _mark_ended(pid_file: Path) -> None:
    record = procs.read_pid_file(pid_file)
    if record is not None and record.get("state") != "ended":
        write_json_atomic(pid_file, {**record, "state": "ended", "ended_at": _now()})


def _run_slurm(step, launcher, python, control: Path, env: dict, token: str, logs: Path,
               progress: bool, command: list[str]) -> tuple[int, str]:
    """Submit the step as a SLURM job and wait for it: (exit status of the stage, job id).

    The job state comes from `squeue` (no accounting storage needed; submitit's own polling
    asks `sacct`), first after 1 s, then at doubling intervals up to `poll_seconds`; the job's
    result file is checked every 0.2 s, so a finished step is seen at once. A job that can never
    start (SLURM_NEVER_STARTS) is cancelled and reported; an interrupted runner cancels its job."""
    header = f"\n===== {_now()} SLURM job of: {' '.join(command)}\n"
    for name in ("stdout.log", "stderr.log"):
        with open(logs / name, "a") as handle:
            handle.write(header)
    job = submit_slurm(launcher, step.names, step.stage.module, python, control / REQUEST,
                       control / "slurm", f"fullchain-{step.name}-{step.step_id}", env, logs=logs)
    job_id = str(job.job_id)
    pid_file = control / PIDS
    procs.write_pid_file(pid_file, token, os.getpid(), step_id=step.step_id, state="running",
                         slurm_job_id=job_id)
    log.info("%-9s %s  submitted SLURM job %s (its log: %s)", step.name, step.step_id, job_id,
             job.paths.stderr)
    display = _Progress(step, logs / "stderr.log", progress)
    state, shown = None, None
    next_query, interval = time.time() + 1.0, 1.0
    try:
        while not job.paths.result_pickle.exists():
            if time.time() >= next_query:
                state = slurm_job_state(job_id) or state
                next_query, interval = time.time() + interval, min(interval * 2,
                                                                   max(launcher.poll_seconds, 1.0))
                if state is not None and str(state) != shown:
                    shown = str(state)  # PENDING (Resources), RUNNING (node), ...: once per change
                    log.info("%-9s %s  SLURM job %s %s", step.name, step.step_id, job_id, state)
                if state is not None and state.never_starts:
                    _cancel_job(step, job_id, "it can never start")
                    asked = " ".join(
                        f"{k}={v}" for k, v in slurm_parameters(launcher, step.names, "").items()
                        if k in ("nodes", "cpus_per_task", "gpus_per_node", "mem", "partition"))
                    raise ConfigError(
                        f"launcher.slurm: SLURM job {job_id} of step {step.name} ({step.step_id}) can "
                        f"never start: {state} - {SLURM_NEVER_STARTS[state.reason]}. It asked for "
                        f"{asked}{slurm_offer()}. The job was cancelled; set launcher.slurm.* "
                        f"(cpus_per_task, gpus_per_node, partition, ...) to what the cluster has.")
                if state is not None and state.finished:
                    # ended without a result (cancelled, timed out, node failure): the result
                    # file, when there is one, is written before the job ends
                    time.sleep(1.0)
                    break
            display.update(f"SLURM job {job_id} {state}" if state is not None and
                           state.state != "RUNNING" else None)
            time.sleep(min(0.2, launcher.poll_seconds))
    except BaseException as exc:
        display.close()
        if not isinstance(exc, ConfigError):
            # The job would run on (and hold its nodes) after the runner that waits for it is gone.
            _cancel_job(step, job_id, "interrupted")
        raise
    finally:
        display.close()
        _mark_ended(pid_file)
    where = (f"\n  SLURM job {job_id}{f' ended {state}' if state is not None else ''}; the job's "
             f"own log: {job.paths.stderr}")
    if not job.paths.result_pickle.exists():
        raise StepFailed(
            f"stage '{step.name}' (step {step.step_id}): SLURM job {job_id} ended "
            f"{state if state is not None else '(state unknown)'} before the stage finished\n"
            f"  The artifact {step.path} is left incomplete (no manifest) and will be redone next "
            f"run; the stage's output is in {logs / 'stderr.log'}" + where)
    try:
        returncode = job.result()  # the stage's exit status (SlurmStepCommand)
    except Exception as exc:  # the job's python itself failed (submitit's trace)
        raise StepFailed(f"stage '{step.name}' (step {step.step_id}): SLURM job {job_id} failed "
                         f"outside the stage: {str(exc).strip().splitlines()[-1]}" + where) from exc
    if returncode != 0:
        raise StepFailed(_failure_message(step, returncode, logs) + where)
    return returncode, job_id


def _cancel_job(step, job_id: str, why: str) -> None:
    try:
        argv = cancel_slurm([job_id])
        log.warning("%-9s %s  %s: cancelled SLURM job %s (%s); the step is left incomplete",
                    step.name, step.step_id, why, job_id, " ".join(argv))
    except RuntimeError as exc:
        log.error("%-9s %s  %s", step.name, step.step_id, exc)


class _Progress:
    """One live status line while a step runs: elapsed time and the stage's latest output."""

    def __init__(self, step, stderr_file: Path, enabled: bool):
        self.step, self.file, self.enabled = step, stderr_file, enabled
        self.start = time.time()
        self.last_heartbeat = self.start

    def _latest_line(self) -> str:
        try:
            with open(self.file, "rb") as handle:
                handle.seek(max(0, self.file.stat().st_size - 2048))
                tail = handle.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in tail.replace("\r", "\n").split("\n")
                 if ln.strip() and not ln.startswith("===== ")]  # skip the runner's own header
        return lines[-1] if lines else "starting"

    def update(self, status: str | None = None) -> None:
        """`status` (a SLURM job's state and reason) stands in for the stage's latest line."""
        elapsed = time.time() - self.start
        if self.enabled:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            line = f"  {self.step.name} {elapsed:6.1f}s | {status or self._latest_line()}"
            sys.stderr.write("\r\033[K" + line[:width])
            sys.stderr.flush()
        elif time.time() - self.last_heartbeat >= 30:
            self.last_heartbeat = time.time()
            log.info("%-9s %s  still running (%.0fs): %s", self.step.name, self.step.step_id,
                     elapsed, (status or self._latest_line())[:120])

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _failure_message(step, returncode: int, logs: Path) -> str:
    """One paragraph for the user: the stage's own message (the last line of its exception, or
    its last line of output), the step id and where the logs are. The traceback stays in
    logs/stderr.log."""
    import re

    def stage_message(lines: list[str]) -> str:
        # The exception of each traceback: the unindented lines after its indented frames.
        found = []
        for start, line in enumerate(lines):
            if not line.startswith("Traceback (most recent call last):"):
                continue
            exc: list[str] = []
            for text in lines[start + 1:]:
                if not exc and (text.startswith((" ", "\t")) or not text.strip()):
                    continue  # a frame, or the blank lines around a chained cause's quotes
                if exc and (not text.strip() or text.startswith(("Traceback", "The above", "During"))):
                    break
                exc.append(text.strip())
            if exc:
                found.append(" ".join(exc))
        # torchrun ends with its own ChildFailedError summary: the rank's own error is earlier
        found = [f for f in found if "ChildFailedError" not in f.split(":", 1)[0]] or found
        if found:
            message = found[-1]
            # `fullchain.data.sources.SourceError: msg` -> `msg`: our errors speak for themselves;
            # keep the class of anything else (`KeyError: 'x'` means nothing without it).
            ours = re.match(r"fullchain(\.\w+)+: (.+)", message)
            return ours.group(2) if ours else message
        # no traceback (sys.exit("..."), a killed process): the last line it wrote
        return next((ln.strip() for ln in reversed(lines) if ln.strip()), "")

    try:
        text = (logs / "stderr.log").read_text(errors="replace")
    except OSError:
        text = ""
    # this attempt only: the runner starts each attempt's log with a `===== <time> <command>` line
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("===== ")]
    message = stage_message(lines[starts[-1] + 1:] if starts else lines)
    if len(message) > 1000:
        message = message[:997] + "..."
    how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited {returncode}"
    said = f": {message}" if message else " without a message"
    return (f"stage '{step.name}' (step {step.step_id}) {how}{said}\n"
            f"  The artifact {step.path} is left incomplete (no manifest) and will be redone next "
            f"run; the full output and traceback are in {logs / 'stderr.log'}")
