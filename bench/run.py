"""The whole benchmark: one command, one report.

    python bench/run.py            # the real figures (several minutes)
    python bench/run.py --smoke    # tiny sizes, seconds: CI runs this so the bench never rots

1. Sink throughput beside Postfix's smtp-sink and bare aiosmtpd, at 1, 20 and
   100 concurrent sessions, fakemx with 1 and 2 workers (bench/sink_throughput.py,
   driven by smtp-source).
1b. Cost growth: msg/s and p50/p99 at 1, 20, 100, 500 sessions and 10 kB, 1 MB,
   25 MB messages, 1 and 2 workers (bench/cost_growth.py).
1c. The store at a million messages: its size, paged queries, a server's RSS and
   the API's message listing (bench/store_scale.py).
2. Stalled connections held by one process, memory per connection, and a new
   client's wait for its greeting meanwhile (bench/held_connections.py).
3. Start to a ready server: FakeMX, the pytest fixture, TLS (bench/fixture_start.py,
   bench/tls_start.py).
4. Stall accuracy at 50 concurrent sessions (bench/stall_accuracy.py).

Figures go in docs/performance.md (raw output in bench/results/), never into a timed test.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent

FULL = [
    ("Sink throughput", "sink_throughput.py",
     ["--messages", "20000", "--sessions", "1", "20", "100", "--runs", "3"]),
    ("Cost growth", "cost_growth.py", []),
    ("Store at many messages", "store_scale.py", []),
    ("Held stalled connections", "held_connections.py", ["--connections", "15000"]),
    ("Start to ready", "fixture_start.py", ["--runs", "200"]),
    ("Start to TLS greeting", "tls_start.py", ["--runs", "50"]),
    ("Stall accuracy", "stall_accuracy.py", ["--sessions", "50", "--rounds", "10"]),
]
SMOKE = [
    ("Sink throughput", "sink_throughput.py",
     ["--messages", "50", "--sessions", "1", "5", "--runs", "1", "--size", "1000"]),
    ("Cost growth", "cost_growth.py",
     ["--sessions", "1", "5", "--sizes", "10240", "--messages", "10"]),
    ("Store at many messages", "store_scale.py", ["--stored", "500", "--delivered", "20"]),
    ("Held stalled connections", "held_connections.py",
     ["--connections", "100", "--clients", "2", "--samples", "10"]),
    ("Start to ready", "fixture_start.py", ["--runs", "3", "--skip-catalog"]),
    ("Start to TLS greeting", "tls_start.py", ["--runs", "3"]),
    ("Stall accuracy", "stall_accuracy.py",
     ["--sessions", "5", "--rounds", "2", "--seconds", "0.05"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it runs")
    args = parser.parse_args()
    failed = 0
    for title, script, script_args in SMOKE if args.smoke else FULL:
        print(f"## {title}", flush=True)
        result = subprocess.run([sys.executable, str(BENCH / script), *script_args])
        if result.returncode != 0:
            print(f"{script} failed with exit status {result.returncode}", flush=True)
            failed += 1
        print(flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
