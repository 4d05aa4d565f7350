"""The cyclic GC's passes in a loaded `fakemx serve`, with and without long_lived_heap.

    python bench/gc_pauses.py [--messages 6000] [--sessions 20] [--runs 3]

Runs `fakemx serve` (the default sink, one process) in a child that times every
collection with ``gc.callbacks``, feeds it Postfix's smtp-source, stops it with
SIGTERM and prints, per generation, how many collections ran and how long they
took in all and at most. ``off`` is the same server with
``fakemx.cli.serving.long_lived_heap`` made a no-op (the GC as Python sets it);
``freeze`` only calls ``gc.freeze()`` once the server is up; ``on`` is fakemx as
shipped. Runs are interleaved.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile

from common import free_port, machine_header
from cpu_per_message import send
from sink_throughput import wait_for_greeting

CHILD = """
import atexit, gc, sys, time
import fakemx.cli.serving
passes = {0: [0, 0.0, 0.0], 1: [0, 0.0, 0.0], 2: [0, 0.0, 0.0]}
started = [0.0]
def timed(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
        return
    took = time.perf_counter() - started[0]
    counts = passes[info["generation"]]
    counts[0] += 1
    counts[1] += took
    counts[2] = max(counts[2], took)
gc.callbacks.append(timed)
atexit.register(lambda: print("gc", *(f"{n} {total:.4f} {most:.4f}" for n, total, most
                                      in passes.values()), file=sys.stderr, flush=True))
if sys.argv[1] == "off":
    fakemx.cli.serving.long_lived_heap = lambda: None
elif sys.argv[1] == "freeze":
    fakemx.cli.serving.long_lived_heap = gc.freeze
from fakemx.cli import main
sys.exit(main(["serve", "--port", sys.argv[2], "--state-dir", sys.argv[3]]))
"""


def run(variant: str, messages: int, sessions: int) -> list[tuple[int, float, float]]:
    """(collections, seconds in all, longest) per generation, for one loaded run."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fakemx-gc-") as state:
        server = subprocess.Popen([sys.executable, "-c", CHILD, variant, str(port), state],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_greeting(port)
            send(port, messages, sessions, 10240)
        finally:
            server.send_signal(signal.SIGTERM)
            _, errors = server.communicate(timeout=30)
    line = next(line for line in errors.splitlines() if line.startswith("gc "))
    numbers = line.split()[1:]
    return [(int(numbers[i]), float(numbers[i + 1]), float(numbers[i + 2]))
            for i in range(0, 9, 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(machine_header(" ".join(["python3", *sys.argv])))
    print(f"# {args.messages} messages of 10240 bytes at {args.sessions} sessions per run;"
          " per generation: collections, seconds in all, the longest in ms")
    print(f"{'variant':<8}{'run':>4}   {'gen 0':>20}   {'gen 1':>20}   {'gen 2':>20}")
    for number in range(args.runs):  # interleaved: a busy moment hits both alike
        for variant in ("off", "freeze", "on"):
            cells = [f"{n:>5} {total:>6.3f} s {most * 1000:>5.1f}"
                     for n, total, most in run(variant, args.messages, args.sessions)]
            print(f"{variant:<8}{number + 1:>4}   " + "   ".join(f"{c:>20}" for c in cells),
                  flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
