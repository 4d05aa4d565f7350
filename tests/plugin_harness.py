"""What the plugin's pytester tests share: inner runs' settings, and running one."""

from __future__ import annotations

import pytest


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
