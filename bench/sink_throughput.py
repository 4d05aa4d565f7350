"""Sink throughput beside smtp-sink, bare aiosmtpd, MailDev and smtp-server, in one run.

    python bench/sink_throughput.py [--messages 5000] [--sessions 20] [--size 10240] [--runs 3]
                                    [--workers 1 2] [--node-messages-per-session 200]
                                    [--peers smtp-sink aiosmtpd aiosmtpd-2p maildev smtp-server]
                                    [--no-install]

Drives each server with Postfix's smtp-source on loopback (the same command for
every one) and prints messages per second (median of the runs, interleaved: one
run of each server per round) and the ratios to smtp-sink, to bare aiosmtpd and
(``x 1 process``) of a server in several processes to itself in one. The peers:
Postfix's smtp-sink; aiosmtpd with its ``Sink`` handler (stores nothing);
``aiosmtpd-2p``, the same in two processes on one port (SO_REUSEPORT, as fakemx's
workers), which shows what a second process gains the library fakemx builds on,
on this machine; MailDev as shipped (mail kept in memory, web UI on loopback);
nodemailer's smtp-server with a handler that discards
(bench/node/smtp-server-sink.js). fakemx runs as shipped: every message durably
stored before its 250; ``fakemx-Nw`` is ``fakemx serve --workers N``. The Node
peers are installed with ``npm ci`` when missing (not with ``--no-install``);
a peer that cannot run is printed as skipped, with the reason. Both Node peers
wait 100 ms before each greeting (smtp-server's check for clients that talk
too soon, not configurable), which holds them to 10 msg/s per session with one
message per connection; ``--node-messages-per-session`` caps their runs so one
session does not take minutes (the table shows each server's message count).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from typing import NamedTuple

import node_peers
from common import free_port

BARE_AIOSMTPD = """
import asyncio, functools, os, socket, sys
from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import SMTP
port, processes = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1
async def main(listening):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(functools.partial(SMTP, Sink(), hostname="bare"),
                                      sock=listening)
    print("ready", flush=True)
    await asyncio.Event().wait()
def bound():
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    return sock
listening = bound()
for _ in range(processes - 1):  # each process its own socket on the port, as fakemx's workers
    if os.fork() == 0:
        listening = bound()
        break
listening.listen(1024)
asyncio.run(main(listening))
"""


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


class Running(NamedTuple):
    port: int
    pid: int  # fakemx with workers: their parent


@contextmanager
def server(kind: str, state_dir: str) -> Iterator[Running]:
    port = free_port()
    environment = None
    if kind in node_peers.NODE_PEERS:
        command = node_peers.command(kind, port, free_port())
        environment = node_peers.environment(state_dir)
    elif kind == "smtp-sink":
        command = [tool("smtp-sink"), "-c", f"127.0.0.1:{port}", "1000"]
        if os.geteuid() == 0:  # smtp-sink refuses to run as root without a user to become
            command[1:1] = ["-u", "nobody"]
    elif kind == "aiosmtpd":
        command = [sys.executable, "-c", BARE_AIOSMTPD, str(port)]
    elif kind == "aiosmtpd-2p":  # the ceiling of a server built on aiosmtpd, in 2 processes
        command = [sys.executable, "-c", BARE_AIOSMTPD, str(port), "2"]
    else:  # fakemx-1w, fakemx-2w, ...
        workers = kind.removeprefix("fakemx-").removesuffix("w")
        command = [sys.executable, "-m", "fakemx", "serve", "--port", str(port),
                   "--state-dir", state_dir, "--workers", workers]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=environment, start_new_session=True)
    try:
        assert process.stdout is not None
        if kind.startswith("fakemx-") and kind != "fakemx-1w":
            for line in process.stdout:  # ready once every worker listens
                if "workers ready" in line:
                    break
        threading.Thread(target=process.stdout.read, daemon=True).start()  # never full
        wait_for_greeting(port)
        yield Running(port, process.pid)
    finally:
        stop(process)


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM (fakemx then closes its store), SIGKILL after 10 s; to the process group of
    a server started in a session of its own (so aiosmtpd-2p's second process too)."""
    def signal_all(number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(process.pid) == process.pid:
                os.killpg(process.pid, number)
            else:
                process.send_signal(number)
    signal_all(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        signal_all(signal.SIGKILL)
        process.wait()


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


PEERS = ("smtp-sink", "aiosmtpd", "aiosmtpd-2p", *node_peers.NODE_PEERS)


def runnable(peers: list[str], install: bool) -> list[str]:
    """``peers`` less the Node ones when they cannot run, each printed as skipped with why."""
    wanted = [peer for peer in peers if peer in node_peers.NODE_PEERS]
    reason = node_peers.unavailable(install) if wanted else None
    for peer in wanted if reason else []:
        print(f"{peer:<12} skipped: {reason}", flush=True)
    return [peer for peer in peers if not (reason and peer in wanted)]


# The last column: each multi-process server beside itself in one process.
ONE_PROCESS = {"aiosmtpd-2p": "aiosmtpd", **{f"fakemx-{n}w": "fakemx-1w" for n in range(2, 65)}}


def ratio(medians: dict[str, float], kind: str, base: str) -> str:
    return f"{medians[kind] / medians[base]:.2f}" if base in medians and base != kind else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, nargs="+", default=[20])
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="fakemx with each of these --workers counts")
    parser.add_argument("--peers", nargs="*", choices=PEERS, default=list(PEERS),
                        help="the servers beside fakemx (default: all)")
    parser.add_argument("--node-messages-per-session", type=int, default=0,
                        help="run the Node peers with at most this many messages per session"
                             " (0: --messages, as the others)")
    parser.add_argument("--no-install", action="store_true",
                        help="skip the Node peers when bench/node/node_modules is missing"
                             " rather than run npm ci")
    args = parser.parse_args()
    print(f"{args.messages} messages of {args.size} bytes, median of {args.runs} interleaved"
          f" runs, {len(os.sched_getaffinity(0))} cores", flush=True)
    kinds = [*runnable(args.peers, not args.no_install), *(f"fakemx-{n}w" for n in args.workers)]
    print(f"{'server':<12}{'sessions':>9}{'messages':>9}{'msg/s':>10}{'x smtp-sink':>13}"
          f"{'x aiosmtpd':>12}{'x 1 process':>13}", flush=True)
    for sessions in args.sessions:
        counts = {kind: args.messages for kind in kinds}
        if args.node_messages_per_session:
            for kind in set(kinds) & set(node_peers.NODE_PEERS):
                counts[kind] = min(args.messages, args.node_messages_per_session * sessions)
        rates: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(args.runs):  # interleaved: a busy moment hits every server alike
            for kind in kinds:
                with tempfile.TemporaryDirectory() as state, server(kind, state) as running:
                    rates[kind].append(rate(running.port, counts[kind], sessions, args.size))
        medians = {kind: statistics.median(found) for kind, found in rates.items()}
        for kind in kinds:
            print(f"{kind:<12}{sessions:>9}{counts[kind]:>9}{medians[kind]:>10.0f}"
                  f"{ratio(medians, kind, 'smtp-sink'):>13}{ratio(medians, kind, 'aiosmtpd'):>12}"
                  f"{ratio(medians, kind, ONE_PROCESS.get(kind, kind)):>13}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    asyncio.set_event_loop_policy(None)
    main()
