"""Soak: healthy clients beside hostile ones for a long run, sampled each minute.

    python bench/soak.py --minutes 30 | tee bench/results/soak-DATE.txt

Runs ``fakemx serve --api`` and, on loopback only, at once:
- healthy transactions (4 loops), whose latency is the figure that must stay flat;
- a slow-loris of 300 connections trickling a byte a second (reopened when closed);
- a pipelined burst (EHLO, MAIL, 9,000 RCPTs in one write) every 5 s;
- a transaction whose EHLO and MAIL FROM are not UTF-8, twice a second;
- a 5 MiB message every 20 s;
- an event stream (GET /api/events) opened each minute and never read (up to 30).
Each minute: the server's RSS and open descriptors, the healthy p50/p99 and the
count of each kind. Flat lines are the promise (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from common import machine_header, percentile

HOST = "127.0.0.1"
LORIS = 300
BURST_RCPTS = 9_000
BIG_BYTES = 5 * 2**20


@dataclass
class Tally:
    healthy: list[float] = field(default_factory=list)  # latencies this minute
    healthy_failed: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1


async def reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return line


async def transaction(port: int, helo: bytes = b"healthy.example",
                      sender: bytes = b"a@x.example", body: bytes = b"Subject: s\r\n\r\nx\r\n",
                      source: str | None = None) -> None:
    reader, writer = await asyncio.open_connection(
        HOST, port, local_addr=(source, 0) if source else None)
    try:
        await reply(reader)
        for line in (b"EHLO " + helo, b"MAIL FROM:<" + sender + b">", b"RCPT TO:<b@y.example>",
                     b"DATA"):
            writer.write(line + b"\r\n")
            code = await reply(reader)
            if code[:1] not in b"23":
                raise ConnectionError(code)
        writer.write(body + b".\r\n")
        code = await reply(reader)
        if not code.startswith(b"250"):
            raise ConnectionError(code)
        writer.write(b"QUIT\r\n")
        await reply(reader)
    finally:
        writer.close()


async def healthy(port: int, tally: Tally, stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        try:
            await asyncio.wait_for(transaction(port), 30)
            tally.healthy.append(time.perf_counter() - started)
        except (OSError, ConnectionError, TimeoutError):
            tally.healthy_failed += 1
        await asyncio.sleep(0.05)


async def loris(port: int, index: int, tally: Tally, stop: asyncio.Event) -> None:
    source = f"127.0.1.{2 + index % 50}"
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(HOST, port, local_addr=(source, 0))
            tally.count("loris_connect")
            await reader.readline()
            for byte in b"EHLO slowly.example" * 100:
                if stop.is_set():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(1)
            writer.close()
        except (OSError, ConnectionError):
            await asyncio.sleep(1)


async def every(seconds: float, stop: asyncio.Event, work: object) -> None:
    assert callable(work)
    while not stop.is_set():
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            await asyncio.wait_for(work(), 120)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


async def burst(port: int, tally: Tally) -> None:
    reader, writer = await asyncio.open_connection(HOST, port, local_addr=("127.0.2.2", 0))
    try:
        await reply(reader)
        writer.write(b"EHLO burst.example\r\nMAIL FROM:<a@burst.example>\r\n" + b"".join(
            b"RCPT TO:<r%d@dest.example>\r\n" % n for n in range(BURST_RCPTS)) + b"QUIT\r\n")
        while await reader.read(65536):
            pass
        tally.count("burst")
    finally:
        writer.close()


async def invalid(port: int, tally: Tally) -> None:
    await transaction(port, helo=b"\xff\xfe.example", sender=b"al\xffce@x.example",
                      source="127.0.3.2")
    tally.count("invalid_bytes")


async def big(port: int, tally: Tally) -> None:
    line = b"x" * 76 + b"\r\n"
    await transaction(port, body=b"Subject: big\r\n\r\n" + line * (BIG_BYTES // len(line)),
                      source="127.0.4.2")
    tally.count("big_message")


async def abandoned_stream(api_port: int, streams: list[asyncio.StreamWriter],
                           tally: Tally) -> None:
    if len(streams) >= 30:
        return
    _, writer = await asyncio.open_connection(HOST, api_port)
    writer.write(f"GET /api/events HTTP/1.1\r\nHost: {HOST}:{api_port}\r\n\r\n".encode())
    streams.append(writer)  # and never read from it
    tally.count("abandoned_stream")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        found = re.search(r"VmRSS:\s+(\d+)", status.read())
    return int(found[1]) if found else 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def run(minutes: float) -> None:
    with tempfile.TemporaryDirectory() as state:
        server = subprocess.Popen(  # noqa: ASYNC220 (once, before any client runs)
            [sys.executable, "-m", "fakemx", "serve", "--port", "0", "--api", "0",
             "--state-dir", state], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert server.stdout is not None
        port = api_port = 0
        while not (port and api_port):
            line = server.stdout.readline().decode()
            if not line:
                raise SystemExit(f"fakemx serve ended: {server.stderr.read().decode()[-500:]}")
            if found := re.search(r"serving \S+ on 127\.0\.0\.1:(\d+)", line):
                port = int(found[1])
            if found := re.search(r"API on http://127\.0\.0\.1:(\d+)", line):
                api_port = int(found[1])
        tally, stop, streams = Tally(), asyncio.Event(), []
        tasks = [asyncio.create_task(healthy(port, tally, stop)) for _ in range(4)]
        tasks += [asyncio.create_task(loris(port, n, tally, stop)) for n in range(LORIS)]
        tasks += [
            asyncio.create_task(every(5, stop, lambda: burst(port, tally))),
            asyncio.create_task(every(0.5, stop, lambda: invalid(port, tally))),
            asyncio.create_task(every(20, stop, lambda: big(port, tally))),
            asyncio.create_task(every(60, stop, lambda: abandoned_stream(api_port, streams,
                                                                         tally))),
        ]
        print("minute  rss_MB  fds  healthy_n  healthy_p50_ms  healthy_p99_ms  healthy_failed"
              "  counts", flush=True)
        try:
            for minute in range(1, int(minutes) + 1):
                await asyncio.sleep(60)
                latencies, tally.healthy = tally.healthy, []
                failed, tally.healthy_failed = tally.healthy_failed, 0
                counts, tally.counts = tally.counts, {}
                p50 = percentile(latencies, 0.5) * 1000 if latencies else float("nan")
                p99 = percentile(latencies, 0.99) * 1000 if latencies else float("nan")
                print(f"{minute:>6}  {rss_kb(server.pid) / 1024:6.1f}  {fds(server.pid):>4}"
                      f"  {len(latencies):>9}  {p50:14.2f}  {p99:14.2f}  {failed:>14}"
                      f"  {' '.join(f'{k}={v}' for k, v in sorted(counts.items()))}",
                      flush=True)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in streams:
                writer.close()
            server.terminate()
            _, stderr = server.communicate(timeout=60)
        print(f"fakemx exit code {server.returncode}; stderr {len(stderr)} bytes:")
        print(stderr.decode(errors="replace")[-2000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    args = parser.parse_args()
    print(machine_header(f"bench/soak.py --minutes {args.minutes:g}"))
    asyncio.run(run(args.minutes))


if __name__ == "__main__":
    main()
