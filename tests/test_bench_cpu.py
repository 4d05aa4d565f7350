"""bench/cpu_per_message.py runs (tiny sizes) so it never rots; no figure is asserted here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_cpu_per_message_prints_a_row_per_server() -> None:
    if shutil.which("smtp-source", path="/usr/sbin:/usr/bin") is None:
        pytest.skip("smtp-source (Debian's postfix package) is not installed")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cpu_per_message.py"), "--runs", "1",
         "--messages", "20", "--size", "1000", "--sessions", "2"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0] for line in result.stdout.splitlines() if line[:1].isalpha()}
    assert {"server", "aiosmtpd", "fakemx"} <= rows, result.stdout
