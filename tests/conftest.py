from __future__ import annotations

from collections.abc import Iterator

import pytest

from fakemx import FakeMX


@pytest.fixture
def sink() -> Iterator[FakeMX]:
    """A healthy default sink in a background thread: the positive control."""
    with FakeMX() as mx:
        yield mx


@pytest.fixture
def control(sink: FakeMX) -> None:
    """Positive control: the same raw client completes a transaction on a healthy server.

    Proves that a failure seen next comes from the profile, not from the client.
    """
    from wire import dialogue

    transcript = dialogue(sink.host, sink.port)
    assert transcript.ended_at is None, transcript
    assert transcript.code("body") == 250
    assert transcript.code("quit") == 221
    sink.wait_for(messages=1)
