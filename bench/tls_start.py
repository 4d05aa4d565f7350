"""Time from "start a TLS profile" to "TLS greeting received", CA already made.

Each run: FakeMX(...).start() on a fresh event loop with a state dir whose CA
exists (certificates are made on the first run and cached after), then a
client connects, reads the 220, sends EHLO and STARTTLS, completes the TLS
handshake verifying against fakemx's CA, and reads the EHLO reply over TLS.
With --implicit the greeting itself arrives over TLS (SMTPS).

    python bench/tls_start.py [--runs 50] [--profile tls-valid-starttls] [--implicit]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import tempfile
import time
from pathlib import Path

from fakemx import FakeMX
from fakemx.tls.certs import load_or_create_ca

TIMEOUT_SECONDS = 5.0


async def _line_reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if len(line) < 4 or line[3:4] != b"-":
            return line


async def one_run(state_dir: Path, profile: str, implicit: bool,
                  context: ssl.SSLContext) -> float:
    started = time.perf_counter()
    mx = FakeMX(profile, state_dir=state_dir)
    await mx.start()
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            if implicit:
                reader, writer = await asyncio.open_connection(
                    mx.host, mx.port, ssl=context, server_hostname="mx.fakemx.test")
                greeting = await _line_reply(reader)
            else:
                reader, writer = await asyncio.open_connection(mx.host, mx.port)
                await _line_reply(reader)
                writer.write(b"EHLO bench.example\r\nSTARTTLS\r\n")
                await _line_reply(reader)
                assert (await _line_reply(reader)).startswith(b"220")
                await writer.start_tls(context, server_hostname="mx.fakemx.test")
                writer.write(b"EHLO bench.example\r\n")
                greeting = await _line_reply(reader)
            elapsed = time.perf_counter() - started
            assert greeting[:1] == b"2", greeting
            writer.close()
    finally:
        await mx.stop()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--implicit", action="store_true")
    args = parser.parse_args()
    profile = args.profile or ("tls-valid-implicit" if args.implicit else "tls-valid-starttls")
    with tempfile.TemporaryDirectory(prefix="fakemx-bench-") as tmp:
        state_dir = Path(tmp)
        load_or_create_ca(state_dir)  # "CA already existing"
        context = ssl.create_default_context(cafile=str(state_dir / "ca.pem"))
        first = asyncio.run(one_run(state_dir, profile, args.implicit, context))
        times = [asyncio.run(one_run(state_dir, profile, args.implicit, context))
                 for _ in range(args.runs)]
    ms = sorted(t * 1000 for t in times)
    print(f"{profile}: first run (leaf certificate made) {first * 1000:.1f} ms; "
          f"then over {args.runs} runs median {statistics.median(ms):.1f} ms, "
          f"min {ms[0]:.1f} ms, p90 {ms[int(len(ms) * 0.9) - 1]:.1f} ms, max {ms[-1]:.1f} ms")


if __name__ == "__main__":
    main()
