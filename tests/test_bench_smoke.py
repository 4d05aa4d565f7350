"""The benchmark runs (tiny sizes) so it never rots; no figure is asserted here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke_run_prints_every_section() -> None:
    if shutil.which("smtp-source", path="/usr/sbin:/usr/bin") is None:
        pytest.skip("smtp-source (Debian's postfix package) is not installed")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for heading in ("## Sink throughput", "## Cost growth", "## Store at many messages",
                    "## Held stalled connections", "## Start to ready",
                    "## Start to TLS greeting", "## Stall accuracy"):
        assert heading in result.stdout
    for row in ("smtp-sink", "aiosmtpd", "fakemx-1w", "fakemx-2w", "p99 ms", "server RSS",
                "API GET /api/messages", "memory per held connection",
                "error seen by the journal"):
        assert row in result.stdout
