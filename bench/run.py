"""The whole benchmark: one command, one report, its raw output kept.

    python bench/run.py                         # the issue's sizes (about 12 min, quiet machine)
    python bench/run.py --only cost,store       # some sections
    python bench/run.py --smoke                 # tiny sizes, under a minute: CI runs this

Sections (``--only`` takes their keys, comma-separated):

throughput  Sink throughput at 1, 20 and 100 concurrent sessions, smtp-source
            feeding Postfix's smtp-sink, bare aiosmtpd, MailDev, nodemailer's
            smtp-server and fakemx with 1 and 2 workers (bench/sink_throughput.py).
cost        Cost growth: msg/s, p50/p99 and peak RSS at 1, 20, 100, 500 sessions
            and 10 kB, 1 MB, 25 MB messages, 1 and 2 workers (bench/cost_growth.py).
store       A store of a million messages: its size, paged queries, a server's
            RSS and the API's message listing (bench/store_scale.py).
held        15,000 stalled connections held by one process, memory per
            connection, a new client's wait for its greeting (bench/held_connections.py).
start       Start to a ready server: FakeMX, the pytest fixture, TLS
            (bench/fixture_start.py, bench/tls_start.py).
stall       Stall accuracy at 50 concurrent sessions (bench/stall_accuracy.py).

The full run writes everything it prints to bench/results/run-DATE-TIME.txt
(``--output`` to choose; the smoke writes no file unless asked), starting with
the command, the date, the machine and its load average, and giving each
section's wall time. Figures go in docs/performance.md, quoting that file,
never into a timed test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from common import machine_header

BENCH = Path(__file__).resolve().parent
Step = tuple[str, str, list[str]]  # title, script, its arguments

FULL: dict[str, list[Step]] = {
    "throughput": [("Sink throughput", "sink_throughput.py",
                    ["--messages", "3000", "--sessions", "1", "20", "100", "--runs", "3",
                     "--node-messages-per-session", "100"])],
    "cost": [("Cost growth", "cost_growth.py",
              ["--sessions", "1", "20", "100", "500", "--sizes", "10240", "1048576", "26214400",
               "--workers", "1", "2", "--messages", "2000", "--max-bytes", str(2**29)])],
    "store": [("Store at many messages", "store_scale.py",
               ["--stored", "1000000", "--delivered", "20000"])],
    "held": [("Held stalled connections", "held_connections.py", ["--connections", "15000"])],
    "start": [("Start to ready", "fixture_start.py", ["--runs", "200"]),
              ("Start to TLS greeting", "tls_start.py", ["--runs", "50"])],
    "stall": [("Stall accuracy", "stall_accuracy.py", ["--sessions", "50", "--rounds", "10"])],
}
SMOKE: dict[str, list[Step]] = {
    "throughput": [("Sink throughput", "sink_throughput.py",
                    ["--messages", "40", "--sessions", "5", "--runs", "1", "--size", "1000",
                     "--node-messages-per-session", "2", "--no-install"])],
    "cost": [("Cost growth", "cost_growth.py",  # the 25 MB cell is skipped: its path printed
              ["--sessions", "5", "--sizes", "10240", "26214400", "--messages", "10",
               "--max-in-flight", str(2**20)])],
    "store": [("Store at many messages", "store_scale.py",
               ["--stored", "500", "--delivered", "20"])],
    "held": [("Held stalled connections", "held_connections.py",
              ["--connections", "100", "--clients", "2", "--samples", "10"])],
    "start": [("Start to ready", "fixture_start.py", ["--runs", "3", "--skip-catalog"]),
              ("Start to TLS greeting", "tls_start.py", ["--runs", "3"])],
    "stall": [("Stall accuracy", "stall_accuracy.py",
               ["--sessions", "5", "--rounds", "2", "--seconds", "0.05"])],
}


def sections(only: str | None) -> list[str]:
    if only is None:
        return list(FULL)
    wanted = [key.strip() for key in only.split(",") if key.strip()]
    unknown = [key for key in wanted if key not in FULL]
    if unknown:
        sys.exit(f"bench/run.py: --only {','.join(unknown)}: no such section"
                 f" (the sections: {','.join(FULL)})")
    return wanted


def out(line: str, log: TextIO | None) -> None:
    print(line, flush=True)
    if log is not None:
        log.write(line + "\n")
        log.flush()


def run_step(step: Step, log: TextIO | None) -> bool:
    """Run one script, echoing and keeping its output; True if it exited 0."""
    title, script, script_args = step
    out(f"## {title}", log)
    out(f"$ python bench/{script} {' '.join(script_args)}", log)
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, str(BENCH / script), *script_args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        out(line.rstrip("\n"), log)
    status = process.wait()
    if status != 0:
        out(f"{script} failed with exit status {status}", log)
    out(f"({script}: {time.monotonic() - started:.0f} s)", log)
    out("", log)
    return status == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it runs")
    parser.add_argument("--only", metavar="KEYS",
                        help=f"comma-separated sections, of: {','.join(FULL)}")
    parser.add_argument("--output", type=Path,
                        help="the raw output file (default for a full run:"
                             " bench/results/run-DATE-TIME.txt; none for --smoke)")
    args = parser.parse_args()
    keys = sections(args.only)
    output = args.output
    if output is None and not args.smoke:
        output = BENCH / "results" / time.strftime("run-%Y-%m-%d-%H%M.txt", time.gmtime())
    log = output.open("w") if output is not None else None
    try:
        command = " ".join(["python", "bench/run.py", *sys.argv[1:]])
        out(machine_header(command), log)
        load = " ".join(f"{average:.2f}" for average in os.getloadavg())
        out(f"# load average before the run (1, 5, 15 min): {load}", log)
        out("", log)
        started = time.monotonic()
        failed = 0
        for key in keys:
            for step in (SMOKE if args.smoke else FULL)[key]:
                failed += not run_step(step, log)
        out(f"# whole run: {time.monotonic() - started:.0f} s; {failed} section(s) failed", log)
    finally:
        if log is not None:
            log.close()
            print(f"raw output: {output}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
