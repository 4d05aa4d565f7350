"""What the plugin's pytester tests share: inner runs' settings, and running one."""

from __future__ import annotations

import pytest

# Inner test files share these: a bounded smtplib client and a one-message send.
HELPERS = """
import smtplib

import pytest

TIMEOUT = 5.0


def send(mx, recipient="bob@dest.example"):
    with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as smtp:
        message = b"Subject: hi\\r\\n\\r\\nhi\\r\\n"
        return smtp.sendmail("alice@sender.example", [recipient], message)
"""


def inner_ini(pytester: pytest.Pytester) -> None:
    # Inner runs get their own settings. Warnings are errors in this suite, and
    # pytest-asyncio warns on an unset loop scope, pytest-benchmark under xdist.
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\naddopts = -p no:benchmark\n"
    )


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    """Run ``source`` as test_inner.py in pytester's directory."""
    pytester.makepyfile(test_inner=source)
    if "-n" in args:  # xdist workers are processes: run the whole session as one too
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)
    return pytester.runpytest("-p", "no:cacheprovider", *args)
