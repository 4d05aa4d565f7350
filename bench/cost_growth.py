"""How fakemx's cost grows: msg/s and latency at 1..500 concurrent sessions, 10 kB..25 MB messages.

    python bench/cost_growth.py [--sessions 1 20 100 500] [--sizes 10240 1048576 26214400]
                                [--messages 2000] [--workers 1 2] [--max-in-flight 4294967296]

Each session is one connection per message (connect, EHLO, MAIL, RCPT, DATA,
the body, QUIT), as a relay delivers; the latency of a message is from its
connect to the 250 after its final dot. The client is asyncio in this process
and shares the machine's cores with the server, so at many sessions p99
includes the client's own scheduling; it is the same client for every row.
Peak RSS is the server's high-water mark (VmHWM), summed over its workers.
A cell whose messages in flight would pass --max-in-flight bytes is skipped and
says so: fakemx holds each body in memory until it is stored, and this client
buffers each body it is sending, so such a cell needs a multiple of that (see
the peak RSS of the cells that ran) on a machine whose memory is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from common import percentile
from sink_throughput import server


def peak_rss_bytes(pid: int) -> int:
    """VmHWM of ``pid`` and of every process below it (fakemx's workers)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0
    own = next((int(line.split()[1]) * 1024 for line in status.splitlines()
                if line.startswith("VmHWM:")), 0)
    return own + sum(peak_rss_bytes(int(child)) for child in children)


def body_of(size: int) -> bytes:
    """A message of ``size`` bytes: a header, then 78-character lines."""
    head = b"Subject: bench\r\nFrom: a@bench.test\r\n\r\n"
    line = b"x" * 78 + b"\r\n"
    count = max(0, size - len(head)) // len(line)
    return head + line * count


async def reply(reader: asyncio.StreamReader, code: bytes) -> None:
    while True:
        line = await reader.readline()
        if not line.startswith(code):
            raise RuntimeError(f"expected {code!r}, got {line[:80]!r}")
        if line[3:4] != b"-":
            return


async def deliver(port: int, body: bytes) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reply(reader, b"220")
        for command, code in ((b"EHLO bench.test", b"250"), (b"MAIL FROM:<a@bench.test>", b"250"),
                              (b"RCPT TO:<b@dest.test>", b"250"), (b"DATA", b"354")):
            writer.write(command + b"\r\n")
            await reply(reader, code)
        writer.write(body + b"\r\n.\r\n")
        await reply(reader, b"250")
        elapsed = time.perf_counter() - started
        writer.write(b"QUIT\r\n")
        await reply(reader, b"221")
        return elapsed
    finally:
        writer.close()


async def cell(port: int, sessions: int, size: int, messages: int) -> tuple[float, list[float]]:
    body = body_of(size)
    left = messages
    latencies: list[float] = []

    async def session() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            latencies.append(await deliver(port, body))

    started = time.perf_counter()
    await asyncio.gather(*(session() for _ in range(sessions)))
    return messages / (time.perf_counter() - started), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 20, 100, 500])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10240, 1048576, 26214400])
    parser.add_argument("--messages", type=int, default=2000,
                        help="per cell, for 10 kB; fewer for larger messages (at most"
                             " --max-bytes in all), never fewer than one per session")
    parser.add_argument("--max-bytes", type=int, default=2**30)
    parser.add_argument("--max-in-flight", type=int, default=4 * 2**30,
                        help="skip a cell whose sessions x size passes this many bytes")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"{'server':<12}{'sessions':>9}{'size':>10}{'messages':>9}{'msg/s':>9}"
          f"{'p50 ms':>9}{'p99 ms':>9}{'peak RSS MiB':>14}", flush=True)
    for workers in args.workers:
        kind = f"fakemx-{workers}w"
        for size in args.sizes:
            for sessions in args.sessions:
                if sessions * size > args.max_in_flight:
                    print(f"{kind:<12}{sessions:>9}{size:>10}  skipped: {sessions} x {size} bytes"
                          f" = {sessions * size / 2**20:,.0f} MiB in flight, held by the server"
                          f" and again by this client, > --max-in-flight"
                          f" {args.max_in_flight / 2**20:,.0f} MiB", flush=True)
                    continue
                messages = max(sessions, min(args.messages, args.max_bytes // size))
                with tempfile.TemporaryDirectory() as state, server(kind, state) as running:
                    rate, latencies = asyncio.run(cell(running.port, sessions, size, messages))
                    peak = peak_rss_bytes(running.pid)
                print(f"{kind:<12}{sessions:>9}{size:>10}{messages:>9}{rate:>9.0f}"
                      f"{percentile(latencies, 0.5) * 1000:>9.1f}"
                      f"{percentile(latencies, 0.99) * 1000:>9.1f}{peak / 2**20:>14.0f}",
                      flush=True)


if __name__ == "__main__":
    main()
