from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from exim import PrivateExim, why_no_exim
from postfix import PrivatePostfix
from probing import started

from fakemx.tls.certs import CA_FILE, load_or_create_ca


@pytest.fixture(scope="session")
def fakemx_state() -> Iterator[Path]:
    """One state dir (and so one CA) for every fakemx the relay talks to."""
    with tempfile.TemporaryDirectory(prefix="fakemx-e2e-") as state:
        load_or_create_ca(Path(state))
        yield Path(state)


@pytest.fixture(scope="session")
def relay(fakemx_state: Path) -> Iterator[PrivatePostfix]:
    """A private Postfix instance, started once per test process (per xdist worker)."""
    if shutil.which("postfix", path="/usr/sbin:/sbin:/usr/bin") is None:
        pytest.skip("Debian's postfix package is not installed (scripts/test installs it)")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root to start its master")
    with started(lambda root: PrivatePostfix(root, fakemx_state / CA_FILE),
                 "fakemx-postfix-") as instance:
        yield instance


@pytest.fixture(scope="session")
def exim(fakemx_state: Path) -> Iterator[PrivateExim]:
    """A private Exim instance, started once per test process (per xdist worker)."""
    why_not = why_no_exim()
    if why_not is not None:
        pytest.skip(why_not)
    with started(lambda root: PrivateExim(root, fakemx_state / CA_FILE),
                 "fakemx-exim-") as instance:
        yield instance
