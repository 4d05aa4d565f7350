from __future__ import annotations

from collections.abc import Iterator

import pytest

from fakemx import FakeMX


@pytest.fixture
def sink() -> Iterator[FakeMX]:
    """A healthy default sink in a background thread: the positive control."""
    with FakeMX() as mx:
        yield mx
