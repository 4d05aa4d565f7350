"""A full disk: a state dir on a small tmpfs. fakemx answers 452 4.3.1 once the store
cannot grow, loses nothing it already accepted, and keeps serving."""

from __future__ import annotations

import os
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakemx import FakeMX
from fakemx.store import Store


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_answers_452_and_keeps_what_it_accepted(small_disk: Path) -> None:
    body = b"Subject: filler\r\n\r\n" + (b"x" * 76 + b"\r\n") * 400  # ~31 kB each
    accepted: list[int] = []
    refused = 0
    with FakeMX(state_dir=small_disk) as mx, smtplib.SMTP(mx.host, mx.port, timeout=10) as c:
        c.ehlo("relay.example.net")
        for _ in range(40):  # 1.2 MB into 512 kB: the disk fills up on the way
            c.mail("a@sender.example")
            c.rcpt("b@dest.example")
            code, text = c.data(body)
            if code == 250:
                accepted.append(int(text.rsplit(b" ", 1)[1]))
            else:
                assert (code, text) == (452, b"4.3.1 Insufficient system storage")
                refused += 1
        assert c.noop()[0] == 250  # the session goes on
    assert accepted, "nothing was accepted before the disk filled"
    assert refused, "the disk never filled"
    store = Store(small_disk)
    try:
        kept = {m.id: m.content for m in store.messages()}
    finally:
        store.close()
    for queue_id in accepted:  # every 250 is still there, whole
        assert kept[queue_id] == body
