"""The Python sandbox the `python` tool runs code in: one fresh, isolated process per call.

`Sandbox.run(code)` hands the code to a worker (`sandbox_worker.py`: its own process and session,
a fresh temporary directory, no network, CPU-time / memory / process-count / file-size limits,
Landlock allowing reads only of the interpreter's stdlib and system libraries) and returns what
it printed, cut at `output_bytes`, or a clear error: wall timeout, CPU limit, memory limit,
output limit, a non-zero exit with its traceback. After the call the worker's whole process group
is killed and its directory removed.

A warm pool: `pool_size` workers are started ahead and wait, already isolated, for their one
call; each serves exactly one call and is replaced at once, so starting Python is off the call's
path while no state (files, globals, children) carries from one call to the next.
"""
from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("sandbox_worker.py")
NOBODY = 65534


class SandboxError(RuntimeError):
    """The sandbox could not start (a kernel feature it needs is missing)."""


@dataclass
class Result:
    output: str
    """What the code printed (stdout and stderr, in order), cut at the output limit."""
    ok: bool
    """It ran to the end and exited 0."""
    error: str | None = None
    """Why not, in one line (timeout, CPU limit, memory limit, output limit, exit status)."""
    seconds: float = 0.0


@dataclass
class _Worker:
    process: subprocess.Popen
    workdir: Path
    network: str = ""


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
            except FileNotFoundError:
                continue
    return count


class Sandbox:
    """Runs Python code in isolated one-shot worker processes (see the module docstring)."""

    def __init__(self, timeout_s: float = 10.0, memory_mb: int = 512, cpu_seconds: int = 5,
                 max_processes: int = 16, output_bytes: int = 16384, file_mb: int = 16,
                 pool_size: int = 1, python: str | None = None):
        self.timeout_s, self.memory_mb, self.cpu_seconds = timeout_s, memory_mb, cpu_seconds
        self.max_processes, self.output_bytes, self.file_mb = max_processes, output_bytes, file_mb
        self.pool_size, self.python = pool_size, python or sys.executable
        self._ready: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self.network_isolation = ""
        """How the last worker was cut off the network: netns, userns+netns or landlock-tcp."""

    # ------------------------------------------------------------------ workers

    def _nproc_limit(self) -> int:
        # RLIMIT_NPROC counts every process of the user: as root the worker becomes uid 65534,
        # shared by the pool; otherwise it is the caller's own uid with its processes already there.
        uid = NOBODY if os.getuid() == 0 else os.getuid()
        return _processes_of(uid) + self.max_processes + self.pool_size

    def _spawn(self) -> _Worker:
        workdir = Path(tempfile.mkdtemp(prefix="fullchain-sandbox-"))
        if os.getuid() == 0:
            os.chown(workdir, NOBODY, NOBODY)
        settings = {"workdir": str(workdir), "memory_bytes": self.memory_mb << 20,
                    "cpu_seconds": self.cpu_seconds, "nproc": self._nproc_limit(),
                    "file_bytes": self.file_mb << 20}
        import json

        process = subprocess.Popen(
            [self.python, "-I", "-S", str(WORKER), json.dumps(settings)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"})
        return _Worker(process, workdir)

    def _take(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise SandboxError("sandbox is closed")
            worker = self._ready.pop(0) if self._ready else self._spawn()
            while len(self._ready) < self.pool_size:
                self._ready.append(self._spawn())
        return worker

    def warm(self) -> None:
        """Start the pool's workers now (the first call does it otherwise)."""
        with self._lock:
            while len(self._ready) < self.pool_size:
                self._ready.append(self._spawn())

    @staticmethod
    def _finish(worker: _Worker) -> None:
        try:
            os.killpg(worker.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.process.wait()
        for stream in (worker.process.stdin, worker.process.stdout):
            if stream:
                stream.close()
        shutil.rmtree(worker.workdir, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._ready = self._ready, []
        for worker in workers:
            self._finish(worker)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ one call

    def run(self, code: str) -> Result:
        started = time.perf_counter()
        worker = self._take()
        try:
            return self._run(worker, code, started)
        finally:
            self._finish(worker)

    def _run(self, worker: _Worker, code: str, started: float) -> Result:
        process = worker.process
        try:
            process.stdin.write(code.encode())
            process.stdin.close()
        except BrokenPipeError:
            pass  # the worker died before reading: its output says why
        deadline = started + self.timeout_s
        chunks, size, ready_line, error, exited = [], 0, None, None, False
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        fd = process.stdout.fileno()
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                error = f"timeout: the code ran longer than {self.timeout_s:g}s (wall clock) and was killed"
                break
            if not selector.select(min(left, 0.05)):
                if process.poll() is not None and not exited:
                    # the worker is done; children it left would hold the pipe open: end them
                    exited = True
                    os.killpg(process.pid, signal.SIGKILL)
                continue
            data = os.read(fd, 65536)
            if not data:
                break
            if ready_line is None:  # the worker's own first line: READY <network mechanism>
                buffered = b"".join(chunks) + data
                if b"\n" not in buffered:
                    chunks = [buffered]
                    continue
                ready_line, data = buffered.split(b"\n", 1)
                chunks = []
                if not ready_line.startswith(b"READY "):  # it failed to isolate itself
                    data = ready_line + b"\n" + data
                    ready_line = b"NOT READY"
                else:
                    self.network_isolation = worker.network = ready_line[6:].decode()
            size += len(data)
            chunks.append(data)
            if size > self.output_bytes:
                error = f"output limit: the code printed more than {self.output_bytes} bytes and was killed"
                break
        selector.close()
        if error is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        status = process.wait()
        output = b"".join(chunks)[: self.output_bytes].decode(errors="replace")
        if ready_line == b"NOT READY" or ready_line is None and status != 0 and error is None:
            raise SandboxError(f"the sandbox worker could not isolate itself: {output.strip()[-500:]}")
        if error is None and status != 0:
            error = self._explain(status, output)
        return Result(output=output, ok=error is None, error=error,
                      seconds=time.perf_counter() - started)

    def _explain(self, status: int, output: str) -> str:
        if status in (-signal.SIGXCPU, -signal.SIGKILL):
            return f"CPU limit: the code used more than {self.cpu_seconds}s of CPU time and was killed"
        if status == -signal.SIGXFSZ:
            return f"file size limit: the code wrote a file larger than {self.file_mb} MiB"
        if status < 0:
            return f"killed by signal {signal.Signals(-status).name}"
        last = output.strip().splitlines()[-1] if output.strip() else f"exit status {status}"
        if "Resource temporarily unavailable" in last and ("fork" in output or "BlockingIOError" in last):
            return f"process limit: the code tried to start more than {self.max_processes} processes ({last})"
        if last.startswith("MemoryError"):
            return f"memory limit: the code needed more than {self.memory_mb} MiB ({last})"
        return f"error: {last}"
