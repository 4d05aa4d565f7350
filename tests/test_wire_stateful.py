"""Stateful triggers: greylisting by count and by time, seeded intermittent failure, concurrency."""

from __future__ import annotations

from wire import connect, dialogue, read_reply, wait_closed

from fakemx import FakeMX


class ManualClock:
    """An injectable clock: tests move time instead of waiting for it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_greylisting_by_attempts() -> None:
    with FakeMX("4.4.7-greylist-attempts") as mx:
        codes = [dialogue(mx.host, mx.port).code("rcpt") for _ in range(3)]
        mx.wait_for(ended=3)
    assert codes == [451, 451, 250]
    assert [s.attempt for s in mx.sessions] == [1, 2, 3]
    assert len(mx.messages) == 1


def test_reset_forgets_attempts() -> None:
    with FakeMX("4.4.7-greylist-attempts") as mx:
        dialogue(mx.host, mx.port)
        dialogue(mx.host, mx.port)
        mx.reset()
        assert dialogue(mx.host, mx.port).code("rcpt") == 451  # attempt 1 again


def test_greylisting_is_per_client_address() -> None:
    with FakeMX("4.4.7-greylist-attempts") as mx:
        for _ in range(2):
            dialogue(mx.host, mx.port, source="127.0.0.1")
        assert dialogue(mx.host, mx.port, source="127.0.0.1").code("rcpt") == 250
        assert dialogue(mx.host, mx.port, source="127.0.0.2").code("rcpt") == 451


def test_greylisting_by_time_with_an_injected_clock() -> None:
    clock = ManualClock()
    with FakeMX("4.4.7-greylist-time", clock=clock) as mx:
        first = dialogue(mx.host, mx.port)
        clock.now += 299
        still = dialogue(mx.host, mx.port)
        clock.now += 1
        later = dialogue(mx.host, mx.port)
    assert (first.code("rcpt"), still.code("rcpt"), later.code("rcpt")) == (451, 451, 250)
    assert "Greylisted for 300 seconds" in first.text("rcpt")


def _intermittent_codes(seed: int, tries: int = 16) -> list[int | None]:
    with FakeMX("4.4.7-intermittent", seed=seed) as mx:
        return [dialogue(mx.host, mx.port).code("rcpt") for _ in range(tries)]


def test_intermittent_failure_is_seeded() -> None:
    first = _intermittent_codes(seed=7)
    assert set(first) == {250, 451}  # some fail, some pass
    assert _intermittent_codes(seed=7) == first  # the same seed, the same sequence
    assert _intermittent_codes(seed=8) != first


def test_too_many_connections() -> None:
    with FakeMX("4.7.0-too-many-connections") as mx:
        held = [connect(mx.host, mx.port) for _ in range(2)]
        try:
            for sock in held:
                assert read_reply(sock).startswith(b"220 ")
            with connect(mx.host, mx.port) as third:
                closed = wait_closed(third)
            assert closed.how == "fin"
            assert closed.data.startswith(
                b"421 4.7.0 mx.fakemx.test Error: too many connections from 127.0.0.1"
            )
        finally:
            for sock in held:
                sock.close()
        mx.wait_for(ended=3)
        # With the others gone, a new client is served again.
        assert dialogue(mx.host, mx.port).code("body") == 250
