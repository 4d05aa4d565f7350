"""CPU time per message of fakemx and bare aiosmtpd: a figure a shared machine cannot skew much.

    python bench/cpu_per_message.py [--messages 3000] [--sessions 20] [--size 10240] [--runs 5]
                                    [--fakemx NAME=TREE ...] [--py-spy DIR]

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

from common import machine_header
from sink_throughput import BARE_AIOSMTPD, free_port, stop, tool, wait_for_greeting

TREE = Path(__file__).resolve().parent.parent
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
WARM_UP_MESSAGES = 300
SETTLE_SECONDS = 0.3  # the server is done once its CPU time stops growing this long


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND  # fields 14 and 15


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
    if kind == "aiosmtpd":
        command, cwd = [sys.executable, "-c", BARE_AIOSMTPD, str(port)], None
    else:  # `python -m` puts its working directory first on sys.path: the tree's fakemx
        cwd = trees[kind]
        env["PYTHONPATH"] = os.pathsep.join([str(cwd), env.get("PYTHONPATH", "")])
        command = [sys.executable, "-m", "fakemx", "serve", "--port", str(port),
                   "--state-dir", state_dir, "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=env, cwd=cwd)
    try:
        assert process.stdout is not None
        threading.Thread(target=process.stdout.read, daemon=True).start()  # never full
        wait_for_greeting(port)
        yield port, process.pid
    finally:
        stop(process)


def send(port: int, messages: int, sessions: int, size: int) -> None:
    subprocess.run(
        [tool("smtp-source"), "-s", str(sessions), "-m", str(messages), "-l", str(size),
         "-f", "alice@sender.example", "-t", "bob@dest.example", f"127.0.0.1:{port}"],
        check=True, stdout=subprocess.DEVNULL,
    )


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


def measure(kind: str, trees: dict[str, Path], args: argparse.Namespace,
            spy_out: Path | None) -> tuple[float, float]:
    """(microseconds of the server's CPU per message, messages per second), for one run."""
    with tempfile.TemporaryDirectory(prefix="fakemx-cpu-") as state, \
            started(kind, trees, state) as (port, pid):
        send(port, WARM_UP_MESSAGES, args.sessions, args.size)
        before = settled_cpu_seconds(pid)
        with sampled(pid, spy_out):
            started_at = time.monotonic()
            send(port, args.messages, args.sessions, args.size)
            seconds = time.monotonic() - started_at
            after = settled_cpu_seconds(pid)
    return (after - before) * 1e6 / args.messages, args.messages / seconds


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
    args = parser.parse_args()
    trees = {"fakemx": TREE} if not args.fakemx else {
        name: Path(tree).resolve() for name, tree in (spec.split("=", 1) for spec in args.fakemx)}
    kinds = ["aiosmtpd", *trees]
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    print(machine_header(" ".join(["python3", *sys.argv])))
    print(f"# {args.messages} messages of {args.size} bytes at {args.sessions} sessions,"
          f" median of {args.runs} interleaved runs; trees: "
          + ", ".join(f"{name}={tree}" for name, tree in trees.items()))
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    for run in range(args.runs):  # interleaved: a busy moment hits every server alike
        for kind in kinds:
            out = None if args.py_spy is None else args.py_spy / f"{kind}-{run}.txt"
            used, rate = measure(kind, trees, args, out)
            cpu[kind].append(used)
            rates[kind].append(rate)
    base = statistics.median(cpu["aiosmtpd"])
    base_rate = statistics.median(rates["aiosmtpd"])
    # msg/s is the wall clock's: on a shared machine, read it as a hint only.
    print(f"{'server':<12}{'CPU us/msg':>11}{'x aiosmtpd':>11}{'msg/s':>7}{'x aiosmtpd':>11}"
          "   CPU us/msg of each run")
    for kind in kinds:
        median, rate = statistics.median(cpu[kind]), statistics.median(rates[kind])
        runs = " ".join(f"{value:.0f}" for value in cpu[kind])
        print(f"{kind:<12}{median:>11.0f}{median / base:>11.2f}{rate:>7.0f}"
              f"{rate / base_rate:>11.2f}   {runs}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
