"""How exactly fakemx keeps a stall: greeting delay error at 50 concurrent sessions.

    python bench/stall_accuracy.py [--sessions 50] [--rounds 10] [--seconds 0.2]

Serves a profile whose greeting stalls ``--seconds`` (``fakemx serve``, its own
process), opens ``--sessions`` connections at once, and measures each one's
wait from connect to the 220; the error is the wait minus the stall. Prints
p50 and p99 of the error over all rounds, as the clients saw it and as
fakemx's journal has it (the stall's start to the greeting written), the
latter free of the client's own scheduling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import percentile


async def one(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()  # connected: the stall starts at the accept
    line = await reader.readline()
    waited = time.perf_counter() - started
    assert line.startswith(b"220"), line
    writer.close()
    await writer.wait_closed()
    return waited


async def rounds(port: int, sessions: int, count: int) -> list[float]:
    waits: list[float] = []
    for _ in range(count):
        waits += await asyncio.gather(*(one(port) for _ in range(sessions)))
    return waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=0.2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        profile = Path(state) / "stall.toml"
        stall = f"stall = {{ seconds = {args.seconds} }}"
        profile.write_text(f'[[rules]]\nstage = "greeting"\n{stall}\n')
        server = subprocess.Popen(
            [sys.executable, "-m", "fakemx", "serve", str(profile), "--port", "0",
             "--state-dir", state], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        try:
            assert server.stdout is not None
            found = re.search(rb"127\.0\.0\.1:(\d+)", server.stdout.readline())
            assert found, "fakemx did not start"
            waits = asyncio.run(rounds(int(found[1]), args.sessions, args.rounds))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        journaled = journal_errors(Path(state) / "fakemx.sqlite3", args.seconds)
    print(f"stall {args.seconds * 1000:.0f} ms, {args.sessions} concurrent sessions x"
          f" {args.rounds} rounds")
    for label, errors in (("clients", [(w - args.seconds) * 1000 for w in waits]),
                          ("journal", journaled)):
        print(f"  error seen by the {label}: p50 {statistics.median(errors):.2f} ms,"
              f" p99 {percentile(errors, 0.99):.2f} ms")


def journal_errors(database: Path, seconds: float) -> list[float]:
    """(greeting written - stall started - seconds) per session, in ms, from the journal."""
    errors = []
    with sqlite3.connect(database) as db:
        for (events,) in db.execute("SELECT events FROM sessions"):
            decoded = json.loads(events)
            start = next(e["at"] for e in decoded if e["text"].startswith("stall"))
            greeted = next(e["at"] for e in decoded if e["kind"] == "server")
            errors.append((greeted - start - seconds) * 1000)
    return errors


if __name__ == "__main__":
    main()
