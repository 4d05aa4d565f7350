"""A real ``python -m fakemx`` process for tests: its stdout read line by line, the
ports it prints, the API address; stopped with SIGTERM at the end.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

TIMEOUT = 20.0
ADDRESS = re.compile(r"127\.0\.0\.1:(\d+)")


def clean_env(**variables: str) -> dict[str, str]:
    """This environment without the developer's own FAKEMX_* settings, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKEMX_")}
    return {**env, **variables}


def fakemx_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fakemx", *args], capture_output=True,
                          text=True, timeout=TIMEOUT, env=env or clean_env())


class Process:
    """A ``python -m fakemx ...`` process whose stdout lines a thread collects."""

    def __init__(self, *args: str, env: dict[str, str], command: list[str] | None = None
                 ) -> None:
        command = command or [sys.executable, "-m", "fakemx"]
        self.popen = subprocess.Popen([*command, *args], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, wanted: str | Callable[[str], bool]) -> str:
        """The first new stdout line containing ``wanted`` (or for which it is true)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {wanted!r} in time") from None
            if line is None:
                assert self.popen.stderr is not None
                raise AssertionError(f"fakemx exited: {self.popen.stderr.read()}")
            if wanted(line) if callable(wanted) else wanted in line:
                return line

    def said(self, wanted: str) -> str:
        """The first new line of fakemx's own with ``wanted``, plain or a JSON "info"."""
        line = self.wait_for(wanted)
        return str(json.loads(line)["message"]) if line.startswith("{") else line

    def port(self, wanted: str) -> int:
        found = ADDRESS.search(self.said(wanted))
        assert found, wanted
        return int(found[1])

    def api(self) -> str:
        return self.said("fakemx: API on").split()[-1]


@contextmanager
def process(*args: str, env: dict[str, str], command: list[str] | None = None
            ) -> Iterator[Process]:
    """``fakemx ARGS`` (``command``: how to run fakemx, default this Python's ``-m fakemx``)."""
    running = Process(*args, env=env, command=command)
    try:
        yield running
    finally:
        if running.popen.poll() is None:
            running.popen.terminate()
        code = running.popen.wait(timeout=TIMEOUT)
        running.reader.join(TIMEOUT)
        with running.popen:  # closes its pipes
            pass
        assert code in (0, -15)
