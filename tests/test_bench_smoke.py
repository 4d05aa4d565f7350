"""The benchmark runs (tiny sizes) so it never rots; no figure is asserted here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "bench" / "run.py"


def needs_smtp_source() -> None:
    if shutil.which("smtp-source", path="/usr/sbin:/usr/bin") is None:
        pytest.skip("smtp-source (Debian's postfix package) is not installed")


def test_bench_smoke_run_prints_every_section() -> None:
    needs_smtp_source()
    result = subprocess.run(
        [sys.executable, str(RUN), "--smoke"],
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
    # The Node peers ran, or the report says why not: never dropped in silence.
    for peer in ("maildev", "smtp-server"):
        assert re.search(rf"^{peer} +(5 |skipped: \S)", result.stdout, re.MULTILINE), peer
    # A cost cell over the memory cap is printed as skipped, with the reason.
    assert re.search(r"^fakemx-1w +5 +26214400  skipped: .* in flight", result.stdout,
                     re.MULTILINE)
    assert "(sink_throughput.py: " in result.stdout  # each section's wall time


def test_bench_run_keeps_its_raw_output_with_the_machine_header(tmp_path: Path) -> None:
    output = tmp_path / "raw.txt"
    result = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--only", "stall", "--output", str(output)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kept = output.read_text()
    assert kept.startswith("# python bench/run.py --smoke --only stall --output ")
    assert re.search(r"^# \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; .* cores; Python ", kept,
                     re.MULTILINE)
    assert "## Stall accuracy" in kept
    assert "error seen by the journal" in kept
    assert "## Sink throughput" not in kept  # --only ran that section alone


def test_bench_run_names_the_sections_when_one_is_unknown() -> None:
    result = subprocess.run(
        [sys.executable, str(RUN), "--only", "cost,speed"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "bench/run.py: --only speed: no such section"
        " (the sections: throughput,cost,store,held,start,stall)")
