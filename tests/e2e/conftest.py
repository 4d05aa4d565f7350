from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from exim import PrivateExim, why_no_exim
from postfix import PrivatePostfix

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
    root = Path(tempfile.mkdtemp(prefix="fakemx-postfix-", dir="/tmp"))
    instance = PrivatePostfix(root, fakemx_state / CA_FILE)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def exim(fakemx_state: Path) -> Iterator[PrivateExim]:
    """A private Exim instance, started once per test process (per xdist worker)."""
    why_not = why_no_exim()
    if why_not is not None:
        pytest.skip(why_not)
    root = Path(tempfile.mkdtemp(prefix="fakemx-exim-", dir="/tmp"))
    instance = PrivateExim(root, fakemx_state / CA_FILE)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(root, ignore_errors=True)
