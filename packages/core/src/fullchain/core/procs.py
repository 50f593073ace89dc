"""Process ownership: every process a step starts carries the step's token, and dies with it.

A step's processes do not stay in one process group: torchrun starts each rank with
`start_new_session=True` (torch/distributed/elastic/multiprocessing/subprocess_handler), and
datatrove workers or megatron's checkpoint-writer Manager may start their own. What they all
keep is their environment, so the runner puts `FULLCHAIN_STEP_TOKEN=<token>` in the step's
environment and finds the step's processes by reading `/proc/<pid>/environ`. A process that
starts a child with a scrubbed environment (`env={}`) escapes this; none of ours does.

Three things then hold a step's processes to their runner (Linux only, stdlib only):
- `PR_SET_PDEATHSIG` on the step's direct child (`preexec_fn=die_with_parent(...)`): the
  kernel signals it when the runner dies, even by SIGKILL;
- the worker (`fullchain.core.worker`) turns that SIGTERM, or its parent vanishing, into
  `terminate(token)` of every other process of the step, then exits non-zero;
- a run that takes a step's lock first terminates whatever still carries the step's token
  (orphans of a runner that died), so the lock holds for as long as any process of the step.

Services (a server a step starts and later steps talk to) use the same token:
`start_service`, `wait_healthy`, `stop`, `clean_stale`.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

TOKEN_VAR = "FULLCHAIN_STEP_TOKEN"
"""Environment variable every process of a step inherits."""

GRACE_SECONDS = 10.0
"""SIGTERM, then this long to exit cleanly (flush logs, close files), then SIGKILL."""

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Terminated(BaseException):
    """SIGTERM arrived; raised like KeyboardInterrupt so `finally` blocks stop what they own.
    A BaseException, so `except Exception` in stage or library code does not swallow it."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(f"received signal {signal.Signals(signum).name}")
        self.signum = signum


def raise_on_sigterm() -> None:
    """Make SIGTERM raise `Terminated` in the main thread (call from the main thread)."""

    def handler(signum, frame):
        raise Terminated(signum)

    signal.signal(signal.SIGTERM, handler)


def step_token(path: str | os.PathLike) -> str:
    """The token of the step writing `path`: the same for every run of that step on this
    machine, so a later run finds what an earlier, killed one left behind."""
    return hashlib.sha256(str(Path(path).resolve()).encode("utf-8")).hexdigest()[:24]


# --- finding processes -----------------------------------------------------------------------

def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time in clock ticks) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) is in parentheses and may hold spaces or ')'
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def alive(pid: int) -> bool:
    """Whether `pid` runs. A zombie (exited, not yet reaped by its parent) does not."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def start_time(pid: int) -> int | None:
    """Kernel start time of `pid` (clock ticks since boot): with the pid, names one process
    even after the pid is reused."""
    stat = _stat(pid)
    return stat[2] if stat else None


def ancestors(pid: int | None = None) -> list[int]:
    """`pid`'s parent, its parent, ... up to (not including) pid 0."""
    chain, pid = [], os.getpid() if pid is None else pid
    while True:
        stat = _stat(pid)
        if stat is None or stat[1] <= 0:
            return chain
        pid = stat[1]
        chain.append(pid)


def find(token: str) -> list[int]:
    """Live pids whose environment carries `token` (this process excluded)."""
    needle = f"\0{TOKEN_VAR}={token}\0".encode()
    me, found = os.getpid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:  # gone meanwhile, or another user's process
            continue
        # NUL-separated; a leading NUL anchors the name, the trailing one ends the value
        if needle in b"\0" + environ + b"\0":
            found.append(int(entry.name))
    return [pid for pid in found if alive(pid)]


def _send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate(token: str, grace: float = GRACE_SECONDS, exclude: Iterable[int] = (),
              poll: float = 0.1) -> list[int]:
    """Stop every process carrying `token` (except this one and `exclude`): SIGTERM, up to
    `grace` seconds to exit, then SIGKILL. Processes that appear meanwhile (a child forked
    during shutdown) are caught by the rescans. Returns the pids it signalled.

    If interrupted (a second Ctrl-C), SIGKILLs what is left before re-raising: a user who
    presses twice wants it gone now."""
    excluded = {os.getpid(), *exclude}
    signalled: list[int] = []
    deadline = time.monotonic() + grace
    give_up = deadline + 5.0  # a process in uninterruptible sleep (D) can outlive SIGKILL a while
    try:
        while True:
            pids = [pid for pid in find(token) if pid not in excluded]
            if not pids or time.monotonic() > give_up:
                return signalled
            late = time.monotonic() > deadline
            for pid in pids:
                if late:
                    _send(pid, signal.SIGKILL)
                elif pid not in signalled:
                    _send(pid, signal.SIGTERM)  # once: a repeated SIGTERM restarts handlers
                if pid not in signalled:
                    signalled.append(pid)
            time.sleep(poll)
    except BaseException:
        for pid in find(token):
            if pid not in excluded:
                _send(pid, signal.SIGKILL)
        raise


# --- dying with the parent -------------------------------------------------------------------

def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (PR_SET_PDEATHSIG).

    The "parent" is the thread that forked us; the runner starts steps from its main thread.
    The setting is cleared in forked children and kept across exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` for Popen: the child gets `sig` when the process starting it dies."""
    parent = os.getpid()

    def preexec() -> None:
        set_parent_death_signal(sig)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


# --- services --------------------------------------------------------------------------------

@dataclass
class Service:
    """A server process started by `start_service`, and everything it spawned (by token)."""

    process: subprocess.Popen
    token: str
    pid_file: Path
    log_dir: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def start_service(argv: list[str], env: dict[str, str], cwd: str | os.PathLike,
                  log_dir: str | os.PathLike, token: str, pid_file: str | os.PathLike,
                  die_with_runner: bool = True) -> Service:
    """Start a long-running server: its own session (Ctrl-C in the terminal reaches the runner,
    which stops it), output in `log_dir/service.{stdout,stderr}.log`, `token` in its
    environment, and a pid file recording it so a later run can `clean_stale` it. With
    `die_with_runner`, the kernel SIGTERMs it when this process dies."""
    log_dir, pid_file = Path(log_dir), Path(pid_file)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**env, TOKEN_VAR: token}
    with open(log_dir / "service.stdout.log", "ab") as out, \
            open(log_dir / "service.stderr.log", "ab") as err:
        process = subprocess.Popen(
            list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True, preexec_fn=die_with_parent() if die_with_runner else None)
    write_pid_file(pid_file, token, process.pid, argv=list(argv))
    return Service(process=process, token=token, pid_file=pid_file, log_dir=log_dir)


def wait_healthy(url: str, timeout: float, service: Service | None = None,
                 interval: float = 0.2) -> None:
    """Wait until GET `url` answers 2xx. Raises TimeoutError after `timeout` seconds, or
    RuntimeError at once if `service`'s process exits first (its log says why)."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        if service is not None and service.process.poll() is not None:
            raise RuntimeError(f"service exited {service.process.returncode} before {url} "
                               f"answered; see {service.log_dir / 'service.stderr.log'}")
        try:
            with urllib.request.urlopen(url, timeout=max(0.5, interval * 5)) as response:
                if 200 <= response.status < 300:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, ConnectionError, socket.timeout) as exc:
            last = str(getattr(exc, "reason", exc))
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not healthy after {timeout:.0f}s (last: {last})")
        time.sleep(interval)


def stop(service: Service, grace: float = GRACE_SECONDS) -> list[int]:
    """Stop the service and every process carrying its token; remove its pid file."""
    pids = terminate(service.token, grace=grace)
    try:
        service.process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait()
    service.pid_file.unlink(missing_ok=True)
    return pids


def clean_stale(pid_file: str | os.PathLike, grace: float = GRACE_SECONDS) -> list[int]:
    """Stop what an earlier run's pid file records (a server left by a killed runner): every
    process with its token. Returns the pids stopped ([] when there is no pid file).

    Call it holding the step's lock. A pid file whose owner still runs belongs to a live run:
    that raises RuntimeError rather than kill another run's server."""
    pid_file = Path(pid_file)
    record = read_pid_file(pid_file)
    if record is None:
        return []
    owner = record.get("owner") or {}
    if (owner.get("pid") not in (None, os.getpid()) and owner.get("host") == socket.gethostname()
            and start_time(owner["pid"]) == owner.get("start_time")):
        raise RuntimeError(f"{pid_file}: owned by running process {owner['pid']}; not stopping "
                           "another run's processes")
    pids = terminate(record["token"], grace=grace) if record.get("token") else []
    pid_file.unlink(missing_ok=True)
    return pids


# --- pid files -------------------------------------------------------------------------------

def write_pid_file(path: str | os.PathLike, token: str, pid: int, **extra) -> None:
    """Record who runs what, for `show`, for debugging, and for a later run's clean-up."""
    from fullchain.core.artifact import write_json_atomic

    write_json_atomic(Path(path), {
        "token": token, "pid": pid, "start_time": start_time(pid),
        "owner": {"pid": os.getpid(), "host": socket.gethostname(),
                  "start_time": start_time(os.getpid())},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra})


def read_pid_file(path: str | os.PathLike) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
