"""``--workers N``: one server served by N processes, for N cores.

The parent binds no port itself. It starts worker 0 (``python -m fakemx`` with
the same arguments and ``FAKEMX_WORKER=0``), reads the ports it bound (port 0
picks free ones) from a pipe, then starts the others on those same ports with
SO_REUSEPORT: the kernel spreads the connections over every worker. It prints
one ready line once every worker is listening, starts again a worker that dies
(on the same ports), and on SIGTERM or SIGINT stops them all and exits 0.

What stays per worker, and what is shared, is said in docs/performance.md
(Workers); the shared counters are fakemx.sharedstate.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakemx.errors import FakeMXError
from fakemx.store import Store

SLOT_ENV = "FAKEMX_WORKER"  # this process's slot, set by the parent only
READY_FD_ENV = "FAKEMX_WORKER_READY_FD"  # where a worker writes its ports once listening
PORTS_ENV = "FAKEMX_WORKER_PORTS"  # the ports worker 0 bound, for the others and restarts
READY_SECONDS = 60.0  # a worker that is not listening by then is a failed start
STOP_SECONDS = 10.0  # after SIGTERM, then SIGKILL (a session's 421 takes ~2 s at most)
RESTART_PAUSE_SECONDS = 1.0  # between restarts of one slot, so a crash loop is no busy loop
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerPlace:
    """What a worker is told by its parent: its slot, and the ports to bind (None for
    worker 0's first start: it binds what the arguments say and reports back)."""

    slot: int
    ports: dict[str, int] | None
    api_port: int | None


def this_worker() -> WorkerPlace | None:
    """This process's place among the workers, or None when it is not a worker."""
    slot = os.environ.get(SLOT_ENV)
    if not slot:
        return None
    fixed = json.loads(os.environ.get(PORTS_ENV) or "null")
    return WorkerPlace(int(slot), None if fixed is None else fixed["ports"],
                       None if fixed is None else fixed["api_port"])


def report_ready(ports: dict[str, int], api_port: int | None) -> None:
    """Tell the parent this worker listens, and on which ports (SMTP by server name)."""
    fd = int(os.environ[READY_FD_ENV])
    with os.fdopen(fd, "w") as pipe:
        pipe.write(json.dumps({"ports": ports, "api_port": api_port}) + "\n")


def _die_with_parent() -> Callable[[], None]:
    """What the child runs before exec: SIGTERM when the parent dies (even by kill -9), so
    no worker is left serving the port alone. ctypes is imported here, in the parent: a
    worker, which only imports this module, need not pay for it, and a child between
    fork and exec must not import."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return lambda: libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class WorkerGone(FakeMXError):
    """A worker exited before it listened; it has said why on stderr."""

    def __init__(self, slot: int, code: int) -> None:
        super().__init__(f"worker {slot} exited with {code} before listening (its error is"
                         " above)")
        self.code = code


class _Stopped(Exception):
    """SIGTERM or SIGINT came while a worker was starting: stop, do not wait for it."""


@dataclass
class _Worker:
    slot: int
    process: subprocess.Popen[bytes]
    ready_fd: int
    started: float = field(default_factory=time.monotonic)


class Parent:
    """Starts, watches and stops the workers. Runs on the main thread (signals)."""

    def __init__(self, argv: list[str], count: int, state_dir: Path,
                 say: Callable[[str], None]) -> None:
        self.argv, self.count, self.say = argv, count, say
        self.state_dir = state_dir
        self.workers: dict[int, _Worker] = {}
        self.fixed: dict[str, Any] | None = None  # worker 0's ports, once it reported them
        self.restarts = 0
        self._stopping: list[int] = []  # the signals that ask to stop
        self._wake = -1  # readable when a signal came (signal.set_wakeup_fd)

    def run(self) -> int:
        store = Store(self.state_dir)  # created owner-only, schema and all, before any worker
        try:
            shared = store.share_state()
            try:
                shared.clear_all()  # a fresh server forgets the last run's attempts and counts
            finally:
                shared.close()
        finally:
            store.close()
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        previous = signal.set_wakeup_fd(wake_write)
        stopping, self._wake = self._stopping, wake_read
        handlers = {signum: signal.signal(signum, lambda signum, _: stopping.append(signum))
                    for signum in (signal.SIGTERM, signal.SIGINT)}
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the loop below
        try:
            try:
                self._start_all(stopping)
            except WorkerGone as gone:  # e.g. the port is taken: the worker said so, once
                return gone.code if gone.code > 0 else 1
            except _Stopped:
                return 0
            if not stopping:
                pids = ", ".join(str(w.process.pid) for w in self.workers.values())
                self.say(f"fakemx: {self.count} workers ready (pids {pids})")
            while not stopping:
                select.select([wake_read], [], [], 1.0)
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 512)
                self._restart_dead(stopping)
            return 0
        finally:
            self._stop_all()
            signal.set_wakeup_fd(previous)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(wake_read)
            os.close(wake_write)

    def _start_all(self, stopping: list[int]) -> None:
        """Worker 0 first (it finds the ports), then the others on its ports."""
        self.fixed = self._await_ready(self._spawn(0))
        if stopping:
            return
        for worker in [self._spawn(slot) for slot in range(1, self.count)]:  # side by side
            self._await_ready(worker)

    def _spawn(self, slot: int) -> _Worker:
        ready_read, ready_write = os.pipe()
        env = {**os.environ, SLOT_ENV: str(slot), READY_FD_ENV: str(ready_write)}
        if self.fixed is not None:
            env[PORTS_ENV] = json.dumps(self.fixed)
        try:
            process = subprocess.Popen([sys.executable, "-m", "fakemx", *self.argv], env=env,
                                       pass_fds=(ready_write,), preexec_fn=_die_with_parent())
        finally:
            os.close(ready_write)
        worker = self.workers[slot] = _Worker(slot, process, ready_read)
        return worker

    def _await_ready(self, worker: _Worker) -> dict[str, Any]:
        """The worker's ports once it listens; FakeMXError if it exits first (its own
        error is already on stderr) or takes too long."""
        line = b""
        deadline = time.monotonic() + READY_SECONDS
        try:
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                readable = [] if left <= 0 else self._wait([worker.ready_fd], left)
                if not readable:
                    raise FakeMXError(f"worker {worker.slot} was not listening after"
                                      f" {READY_SECONDS:g} s (is the machine overloaded?)")
                if worker.ready_fd not in readable:
                    continue  # another child ended, or a signal that is not a stop
                chunk = os.read(worker.ready_fd, 4096)
                if not chunk:
                    raise WorkerGone(worker.slot, worker.process.wait())
                line += chunk
        finally:
            os.close(worker.ready_fd)
            worker.ready_fd = -1
        ready: dict[str, Any] = json.loads(line)
        return ready

    def _wait(self, fds: list[int], seconds: float) -> list[int]:
        """Which of ``fds`` became readable within ``seconds``, or a signal woke us
        (_Stopped if it asks to stop)."""
        readable = select.select([*fds, self._wake], [], [], seconds)[0]
        if self._wake in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake, 512)
            if self._stopping:
                raise _Stopped
            return [fd for fd in readable if fd != self._wake] or [self._wake]
        return list(readable)

    def _restart_dead(self, stopping: list[int]) -> None:
        for slot, worker in list(self.workers.items()):
            code = worker.process.poll()
            if code is None or stopping:
                continue
            self.say(f"fakemx: worker {slot} (pid {worker.process.pid}) exited with {code};"
                     " starting it again")
            try:
                if time.monotonic() - worker.started < RESTART_PAUSE_SECONDS:
                    self._wait([], RESTART_PAUSE_SECONDS)  # dies at once: no busy loop
                self._await_ready(self._spawn(slot))
            except _Stopped:
                return
            except FakeMXError as exc:
                self.say(f"fakemx: {exc}")  # tried again on the next turn
            else:
                self.restarts += 1
                self.say(f"fakemx: worker {slot} ready again (pid"
                         f" {self.workers[slot].process.pid})")

    def _stop_all(self) -> None:
        """SIGTERM to every worker (each says 421 to its sessions), SIGKILL if one hangs."""
        for worker in self.workers.values():
            if worker.ready_fd >= 0:
                os.close(worker.ready_fd)
                worker.ready_fd = -1
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for worker in self.workers.values():
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
