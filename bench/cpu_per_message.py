"""CPU time per message of fakemx and bare aiosmtpd: a figure a shared machine cannot skew much.

    python bench/cpu_per_message.py [--messages 3000] [--sessions 20] [--size 10240] [--runs 5]
                                    [--fakemx NAME=TREE ...] [--py-spy DIR] [--processes 1 2]

msg/s on a machine shared with other work measures the machine as much as the
server. This bench reads instead the CPU time (user + system, all threads) the
server process spent on a fixed run of Postfix's smtp-source, from
/proc/PID/stat before and after, and divides it by the messages: microseconds
of CPU per message. Other processes then cost wall time, not this figure (they
still cost some: shared caches, frequency).

Each server is started once per run, warmed with a short run (imports done
lazily, the store's first blocks), then measured; the runs are interleaved
(one of each server per round) and the median is printed. fakemx runs as
shipped: ``fakemx serve`` with the default sink profile, one process, every
message stored before its 250, the journal and the session log lines on.
``--fakemx before=/work/main`` adds a fakemx from another source tree (its
directory put first on PYTHONPATH), so two versions are compared in one run.
``--py-spy DIR`` samples each measured run with py-spy (``pip install py-spy``)
and writes its collapsed stacks there, one file per server and run.

``--processes 1 2`` also measures each server in two processes on one port (bare
aiosmtpd forked after binding, ``fakemx serve --workers 2``), their CPU summed over
the process group, and prints smtp-source's own CPU per message (from its rusage).
From these it prints what a second process could reach at best on a machine of
``--cores`` cores that runs the client too: the cores divided by the CPU per message
of the server in 2 processes plus the client, over the rate of one process that has
a core to itself (one over its CPU per message).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from common import machine_header
from sink_throughput import BARE_AIOSMTPD, free_port, stop, tool, wait_for_greeting

TREE = Path(__file__).resolve().parent.parent
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
WARM_UP_MESSAGES = 300
SETTLE_SECONDS = 0.3  # the server is done once its CPU time stops growing this long


def cpu_seconds(group: int) -> float:
    """utime + stime of every process in the process group ``group`` (every thread), in
    seconds: the server and, with workers, its parent and workers."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):  # ended meanwhile
            continue
        if int(fields[2]) == group:  # field 5, pgrp
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15
    return total / TICKS_PER_SECOND


def settled_cpu_seconds(pid: int) -> float:
    """The CPU time once the server has finished what the run left it (sessions queued
    for the store are written 0.2 s after they end)."""
    last = cpu_seconds(pid)
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < SETTLE_SECONDS:
        time.sleep(0.05)
        now = cpu_seconds(pid)
        if now != last:
            last, quiet_since = now, time.monotonic()
    return last


@contextmanager
def started(kind: str, trees: dict[str, Path], state_dir: str) -> Iterator[tuple[int, int]]:
    """(port, pid) of a running server of ``kind``: "aiosmtpd" or a name in ``trees``."""
    port = free_port()
    env = dict(os.environ)
    name, _, processes = kind.partition(" x")  # "fakemx x2": fakemx in two processes
    if name == "aiosmtpd":
        command, cwd = [sys.executable, "-c", BARE_AIOSMTPD, str(port), processes or "1"], None
    else:  # `python -m` puts its working directory first on sys.path: the tree's fakemx
        cwd = trees[name]
        env["PYTHONPATH"] = os.pathsep.join([str(cwd), env.get("PYTHONPATH", "")])
        command = [sys.executable, "-m", "fakemx", "serve", "--port", str(port),
                   "--state-dir", state_dir, "--workers", processes or "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=env, cwd=cwd, start_new_session=True)
    try:
        assert process.stdout is not None
        if processes and name != "aiosmtpd":
            for line in process.stdout:  # ready once every worker listens
                if "workers ready" in line:
                    break
        threading.Thread(target=process.stdout.read, daemon=True).start()  # never full
        wait_for_greeting(port)
        yield port, process.pid
    finally:
        stop(process)


def send(port: int, messages: int, sessions: int, size: int) -> float:
    """Run smtp-source; its own CPU seconds (user + system)."""
    client = subprocess.Popen(
        [tool("smtp-source"), "-s", str(sessions), "-m", str(messages), "-l", str(size),
         "-f", "alice@sender.example", "-t", "bob@dest.example", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(client.pid, 0)
    client.returncode = os.waitstatus_to_exitcode(status)
    if client.returncode != 0:
        sys.exit(f"smtp-source exited with {client.returncode}")
    return usage.ru_utime + usage.ru_stime


@contextmanager
def sampled(pid: int, out: Path | None) -> Iterator[None]:
    """py-spy sampling ``pid`` meanwhile, its collapsed stacks written to ``out``."""
    if out is None:
        yield
        return
    spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", "250",
                            "--format", "raw", "--output", str(out), "--threads"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the run starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output and exits
        spy.wait(timeout=30)


class Run(NamedTuple):
    server_us: float  # the server's CPU per message, every process of it
    client_us: float  # smtp-source's
    rate: float  # messages per second


def measure(kind: str, trees: dict[str, Path], args: argparse.Namespace,
            spy_out: Path | None) -> Run:
    """One run of ``kind``."""
    with tempfile.TemporaryDirectory(prefix="fakemx-cpu-") as state, \
            started(kind, trees, state) as (port, pid):
        send(port, WARM_UP_MESSAGES, args.sessions, args.size)
        before = settled_cpu_seconds(pid)
        with sampled(pid, spy_out):
            started_at = time.monotonic()
            client = send(port, args.messages, args.sessions, args.size)
            seconds = time.monotonic() - started_at
            after = settled_cpu_seconds(pid)
    return Run((after - before) * 1e6 / args.messages, client * 1e6 / args.messages,
               args.messages / seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fakemx", action="append", default=[], metavar="NAME=TREE",
                        help="a fakemx source tree to measure as NAME (default: this one)")
    parser.add_argument("--py-spy", type=Path, metavar="DIR",
                        help="sample each measured run with py-spy, stacks written to DIR")
    parser.add_argument("--processes", type=int, nargs="+", default=[1], choices=[1, 2],
                        help="each server in 1 and/or 2 processes (default: 1)")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    trees = {"fakemx": TREE} if not args.fakemx else {
        name: Path(tree).resolve() for name, tree in (spec.split("=", 1) for spec in args.fakemx)}
    kinds = [f"{name}{'' if n == 1 else f' x{n}'}"
             for n in args.processes for name in ["aiosmtpd", *trees]]
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    print(machine_header(" ".join(["python3", *sys.argv])))
    print(f"# {args.messages} messages of {args.size} bytes at {args.sessions} sessions,"
          f" median of {args.runs} interleaved runs; trees: "
          + ", ".join(f"{name}={tree}" for name, tree in trees.items()))
    runs: dict[str, list[Run]] = {kind: [] for kind in kinds}
    for run in range(args.runs):  # interleaved: a busy moment hits every server alike
        for kind in kinds:
            name = kind.replace(" ", "")
            out = None if args.py_spy is None else args.py_spy / f"{name}-{run}.txt"
            runs[kind].append(measure(kind, trees, args, out))
    server = {kind: statistics.median(r.server_us for r in found) for kind, found in runs.items()}
    client = {kind: statistics.median(r.client_us for r in found) for kind, found in runs.items()}
    rate = {kind: statistics.median(r.rate for r in found) for kind, found in runs.items()}
    base, base_rate = server[kinds[0]], rate[kinds[0]]  # bare aiosmtpd, in the fewest processes
    # msg/s is the wall clock's: on a shared machine, read it as a hint only.
    print(f"{'server':<14}{'CPU us/msg':>11}{'x aiosmtpd':>11}{'msg/s':>7}{'x aiosmtpd':>11}"
          f"{'client us/msg':>14}   CPU us/msg of each run")
    for kind in kinds:
        each = " ".join(f"{r.server_us:.0f}" for r in runs[kind])
        print(f"{kind:<14}{server[kind]:>11.0f}{server[kind] / base:>11.2f}{rate[kind]:>7.0f}"
              f"{rate[kind] / base_rate:>11.2f}{client[kind]:>14.0f}   {each}")
    for kind in kinds:
        name, _, processes = kind.partition(" x")
        if not processes or name not in server:  # needs the same server in one process
            continue
        # One process with a core of its own: 1 / its CPU per message. N processes on a
        # machine that also runs the client: the cores over (server + client) per message.
        one = 1e6 / server[name]
        best = args.cores * 1e6 / (server[kind] + client[kind])
        print(f"# {kind}: {server[kind] / server[name]:.2f}x the CPU per message of one process;"
              f" at best {best:.0f} msg/s on {args.cores} cores shared with smtp-source,"
              f" {best / one:.2f}x one process with a core to itself ({one:.0f} msg/s)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
