"""The store at many messages: its size, its paged queries, and a server's memory over it.

    python bench/store_scale.py [--stored 1000000] [--delivered 20000]

1. Fills a fresh store with --stored messages of 1 kB (Store.add_message, each
   its own commit, as the server does) and prints the database's size.
2. Times the store's paged queries (what `fakemx messages` and `export` run):
   the first page, a page at the newest end (by the primary key), and a search
   that matches nothing (it reads every row's envelope).
3. Starts `fakemx serve --api` on that state dir, prints its RSS, delivers
   --delivered messages with smtp-source, prints its RSS again and the time of
   the API's message listing (`GET /api/messages`, first page and last page).
   The API lists the server's journal, which keeps the newest 10,000 messages
   in memory (bodies past its byte budget are read back from the store), so
   its listing does not grow with the store; `fakemx messages` pages the store.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from common import free_port
from sink_throughput import tool, wait_for_greeting

from fakemx.journal import KEEP_SESSIONS
from fakemx.mailbox import MessageQuery
from fakemx.store import DB_NAME, Store


def timed(call: Callable[[], object], runs: int = 5) -> float:
    """Median milliseconds of ``call``."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fill(state: Path, count: int) -> None:
    store = Store(state)
    body = b"Subject: stored\r\n\r\n" + b"x" * 1000
    started = time.perf_counter()
    try:
        for number in range(count):
            store.add_message(number // 10 + 1, "127.0.0.1:25", f"a{number}@bench.test",
                              ["b@dest.test"], body)
        print(f"stored {count} messages of 1 kB in {time.perf_counter() - started:.1f} s;"
              f" database {(state / DB_NAME).stat().st_size / 2**20:.1f} MiB", flush=True)
        newest = count - 200
        print(f"store: first page of 200 {timed(lambda: list(_page(store, 0))):.2f} ms;"
              f" newest page {timed(lambda: list(_page(store, newest))):.2f} ms;"
              f" a search matching nothing {timed(lambda: _nothing(store), 1):.0f} ms",
              flush=True)
    finally:
        store.close()


def _page(store: Store, after: int) -> list[object]:
    found: list[object] = []
    for info in store.find_messages(MessageQuery(), after=after):
        found.append(info)
        if len(found) == 200:
            break
    return found


def _nothing(store: Store) -> None:
    for _ in store.find_messages(MessageQuery(sender="nobody-sent-this")):
        pass


def serve(state: Path, delivered: int) -> None:
    port, api_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fakemx", "serve", "--port", str(port), "--state-dir",
         str(state), "--api", str(api_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_greeting(port)
        before = rss_kib(process.pid)
        subprocess.run([tool("smtp-source"), "-s", "20", "-m", str(delivered), "-l", "10240",
                        "-f", "a@bench.test", "-t", "b@dest.test", f"127.0.0.1:{port}"],
                       check=True, stdout=subprocess.DEVNULL)
        after = rss_kib(process.pid)
        url = f"http://127.0.0.1:{api_port}/api/messages?limit=50"
        with urllib.request.urlopen(url) as reply:
            total = json.load(reply)["total"]
        first = timed(lambda: urllib.request.urlopen(url).read())
        last = timed(lambda: urllib.request.urlopen(f"{url}&offset={max(0, total - 50)}").read())
        print(f"server RSS: {before / 1024:.1f} MiB at start over the filled store,"
              f" {after / 1024:.1f} MiB after {delivered} more messages of 10 kB"
              f" ({(after - before) * 1024 / delivered:.0f} bytes each)", flush=True)
        print(f"API GET /api/messages ({total} listed: the journal keeps the newest"
              f" {KEEP_SESSIONS}, the store is paged above): first page {first:.1f} ms,"
              f" last page {last:.1f} ms", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stored", type=int, default=1_000_000)
    parser.add_argument("--delivered", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        state = Path(directory)
        fill(state, args.stored)
        serve(state, args.delivered)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
