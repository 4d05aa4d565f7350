"""Stalled connections held by one fakemx process, and what a new client waits meanwhile.

    python bench/held_connections.py [--connections 15000] [--clients 4]

Runs ``fakemx lab`` (one process serving every profile) and opens N
connections to ``4.4.315-no-greeting`` (a greeting that never comes) from
several client processes, each from its own 127.0.x.y addresses. Reports the
server's memory per held connection (RSS growth / N) and how long a new client
waits for the healthy sink's greeting while they are held (p50 / p99 of 200).
Before it starts it checks what the count needs (open files: the server and
each client raise their soft limit to the hard one; ephemeral ports per source
address) and stops with the fix when the machine cannot give it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from math import ceil
from multiprocessing.connection import Connection
from pathlib import Path

from common import percentile

from fakemx.fdbudget import RESERVE


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# fakemx answers 421 past 1,000 sessions from one address (limits.sessions_per_client),
# so each client process spreads its connections over this many source addresses.
SOURCES_PER_CLIENT = 50


def hold(network: str, port: int, count: int, ready: Connection, done: Connection) -> None:
    """One client process: open ``count`` connections from ``network``.N and keep them."""
    sockets = []
    for n in range(count):
        sock = socket.socket()
        sock.bind((f"{network}.{2 + n % SOURCES_PER_CLIENT}", 0))
        sock.connect(("127.0.0.1", port))
        sockets.append(sock)
    ready.send(len(sockets))
    done.recv()
    for sock in sockets:
        sock.close()


def preflight(connections: int, clients: int) -> None:
    """Say what holding ``connections`` needs, and stop with the fix if this machine lacks it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by lab and clients
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    sources = clients * SOURCES_PER_CLIENT
    print(f"open files: hard limit {hard}; ephemeral ports {low}-{high} ({high - low + 1} per"
          f" source address, {ceil(connections / sources)} used on each of {sources})",
          flush=True)
    needed = connections + RESERVE + 100  # fakemx keeps RESERVE for itself, plus this bench's
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(f"held_connections: {connections} connections need an open-file hard limit of"
                 f" at least {needed}, this one is {hard}: raise it (as root: ulimit -Hn"
                 f" {needed}, or LimitNOFILE) or pass fewer --connections")
    if ceil(connections / sources) > high - low + 1:
        sys.exit("held_connections: not enough ephemeral ports per source address: pass more"
                 " --clients")


def settled_fds(pid: int) -> int:
    """The server's open descriptors once the warm-up sessions it is closing have gone."""
    last, still = open_fds(pid), 0
    while still < 5:
        time.sleep(0.05)
        now = open_fds(pid)
        still = still + 1 if now == last else 0
        last = now
    return last


def wait_until_accepted(pid: int, base_fds: int, held: int) -> int:
    """The server accepts the backlog at its own pace: wait until it has them all or
    stops taking more (a warm-up session closing can make the count one short)."""
    deadline = time.monotonic() + 120
    last, still = -1, 0
    while time.monotonic() < deadline:
        accepted = open_fds(pid) - base_fds
        if accepted >= held:
            return accepted
        still = still + 1 if accepted == last else 0
        if still >= 10:  # a second without a new one
            return accepted
        last = accepted
        time.sleep(0.1)
    return open_fds(pid) - base_fds


def greeting_latency(port: int, samples: int) -> list[float]:
    waits = []
    for _ in range(samples):
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            assert sock.recv(3) == b"220"
        waits.append(time.perf_counter() - started)
    return waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=15000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    preflight(args.connections, args.clients)
    with tempfile.TemporaryDirectory() as state:
        lab = subprocess.Popen(
            [sys.executable, "-m", "fakemx", "lab", "--base-port", "0", "--state-dir", state],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        try:
            ports: dict[str, int] = {}
            assert lab.stdout is not None
            for line in iter(lab.stdout.readline, b""):
                if line.startswith(b"fakemx: lab ready"):
                    break
                found = re.match(rb"\S+:(\d+)\s+(\S+)", line)
                if found:
                    ports[found[2].decode()] = int(found[1])
            stall, sink = ports["4.4.315-no-greeting"], ports["sink"]
            greeting_latency(sink, 20)  # warm up
            idle = statistics.median(greeting_latency(sink, args.samples))
            base_fds = settled_fds(lab.pid)
            base_rss = rss_bytes(lab.pid)
            per_client = args.connections // args.clients
            pipes, workers = [], []
            for index in range(args.clients):
                ready_recv, ready_send = multiprocessing.Pipe(duplex=False)
                done_recv, done_send = multiprocessing.Pipe(duplex=False)
                worker = multiprocessing.Process(
                    target=hold, args=(f"127.0.{index + 1}", stall, per_client, ready_send,
                                       done_recv))
                worker.start()
                pipes.append((ready_recv, done_send))
                workers.append(worker)
            held = sum(ready.recv() for ready, _ in pipes)
            accepted = wait_until_accepted(lab.pid, base_fds, held)
            per_connection = (rss_bytes(lab.pid) - base_rss) / max(accepted, 1)
            waits = greeting_latency(sink, args.samples)
            for _, done in pipes:
                done.send(True)
            for worker in workers:
                worker.join()
        finally:
            lab.send_signal(signal.SIGTERM)
            lab.wait(timeout=60)
    short = "" if accepted >= args.connections else f" - SHORT of the {args.connections} asked"
    print(f"held connections (accepted by the server): {accepted} of {held}{short}")
    print(f"memory per held connection: {per_connection / 1024:.1f} kB"
          f" ({per_connection:.0f} bytes)")
    print(f"new client's wait for the greeting, idle server: p50 {idle * 1000:.2f} ms")
    print(f"  while they are held: p50 {statistics.median(waits) * 1000:.2f} ms,"
          f" p99 {percentile(waits, 0.99) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
