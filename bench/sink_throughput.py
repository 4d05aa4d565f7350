"""Sink throughput beside Postfix's smtp-sink and bare aiosmtpd, in one run.

    python bench/sink_throughput.py [--messages 5000] [--sessions 20] [--size 10240] [--runs 3]
                                    [--workers 1 2]

Drives each server with Postfix's smtp-source on loopback and prints messages
per second (median of the runs, interleaved: one run of each server per round)
and the ratio to smtp-sink. fakemx runs as shipped: every message durably stored
before its 250; ``fakemx-Nw`` is ``fakemx serve --workers N``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

BARE_AIOSMTPD = """
import asyncio, functools, socket, sys
from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import SMTP
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(functools.partial(SMTP, Sink(), hostname="bare"),
                                      "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_greeting(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(3) == b"220":
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextmanager
def server(kind: str, state_dir: str) -> Iterator[int]:
    port = free_port()
    if kind == "smtp-sink":
        command = [tool("smtp-sink"), "-c", f"127.0.0.1:{port}", "1000"]
        if os.geteuid() == 0:  # smtp-sink refuses to run as root without a user to become
            command[1:1] = ["-u", "nobody"]
    elif kind == "aiosmtpd":
        command = [sys.executable, "-c", BARE_AIOSMTPD, str(port)]
    else:  # fakemx-1w, fakemx-2w, ...
        workers = kind.removeprefix("fakemx-").removesuffix("w")
        command = [sys.executable, "-m", "fakemx", "serve", "--port", str(port),
                   "--state-dir", state_dir, "--workers", workers]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    try:
        assert process.stdout is not None
        if kind.startswith("fakemx-") and kind != "fakemx-1w":
            for line in process.stdout:  # ready once every worker listens
                if "workers ready" in line:
                    break
        threading.Thread(target=process.stdout.read, daemon=True).start()  # never full
        wait_for_greeting(port)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found is None:
        sys.exit(f"{name} not found: install Debian's postfix package")
    return found


def rate(port: int, messages: int, sessions: int, size: int) -> float:
    started = time.monotonic()
    subprocess.run(
        [tool("smtp-source"), "-s", str(sessions), "-m", str(messages), "-l", str(size),
         "-f", "alice@sender.example", "-t", "bob@dest.example", f"127.0.0.1:{port}"],
        check=True, stdout=subprocess.DEVNULL,
    )
    return messages / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, nargs="+", default=[20])
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="fakemx with each of these --workers counts")
    args = parser.parse_args()
    kinds = ["smtp-sink", "aiosmtpd", *(f"fakemx-{n}w" for n in args.workers)]
    print(f"{args.messages} messages of {args.size} bytes, median of {args.runs} interleaved"
          f" runs, {len(os.sched_getaffinity(0))} cores")
    print(f"{'server':<12}{'sessions':>9}{'msg/s':>10}{'x smtp-sink':>13}{'x fakemx-1w':>13}")
    for sessions in args.sessions:
        rates: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(args.runs):  # interleaved: a busy moment hits every server alike
            for kind in kinds:
                with tempfile.TemporaryDirectory() as state, server(kind, state) as port:
                    rates[kind].append(rate(port, args.messages, sessions, args.size))
        medians = {kind: statistics.median(found) for kind, found in rates.items()}
        for kind in kinds:
            ratio = medians[kind] / medians["smtp-sink"]
            one = medians[kind] / medians["fakemx-1w"] if "fakemx-1w" in medians else 0.0
            print(f"{kind:<12}{sessions:>9}{medians[kind]:>10.0f}{ratio:>13.2f}{one:>13.2f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    asyncio.set_event_loop_policy(None)
    main()
