"""swaks, the command-line client the README's quick start uses, against FIN and RST profiles.

The README quotes what swaks prints; this runs swaks and holds the quote to it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fakemx import FakeMX

README = Path(__file__).resolve().parent.parent / "README.md"
SWAKS = shutil.which("swaks")
pytestmark = pytest.mark.skipif(SWAKS is None,
                                reason="swaks is not installed (apt-get install swaks)")


def swaks(mx: FakeMX) -> subprocess.CompletedProcess[str]:
    assert SWAKS is not None
    return subprocess.run(
        [SWAKS, "--server", f"{mx.host}:{mx.port}", "--to", "bob@example.test",
         "--from", "alice@example.net", "--timeout", "10"],
        capture_output=True, text=True, timeout=30, check=False,
    )


def complaints(run: subprocess.CompletedProcess[str]) -> list[str]:
    """swaks's own error lines ("*** ...")."""
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("***")]


def readme_quote() -> str:
    """What the quick start says swaks prints, from its comment on the swaks line."""
    match = re.search(r"^swaks --server .*?#\s*(.+)$", README.read_text(), re.MULTILINE)
    assert match is not None, "the README's quick start has no swaks line with a comment"
    return match[1].strip()


def test_swaks_delivers_to_the_sink() -> None:  # the positive control
    with FakeMX() as mx:
        run = swaks(mx)
        mx.wait_for(messages=1)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "250 2.0.0 OK: queued as" in run.stdout


@pytest.mark.parametrize("profile", ["4.4.318-rst-after-mail", "4.4.318-fin-after-mail",
                                     "4.4.318-fin-after-greeting"])
def test_swaks_prints_what_the_readme_quotes(profile: str) -> None:
    # FIN and RST alike: swaks does not tell them apart.
    with FakeMX(profile) as mx:
        run = swaks(mx)
        mx.wait_for(ended=1)
    assert run.returncode != 0
    assert complaints(run) == [readme_quote()], run.stdout + run.stderr
