"""One probe through a real relay into fakemx, the same for Postfix and Exim.

fakemx runs the profile at time_scale 0.01 and the relay's timeouts are
scaled the same way (300 s -> 3 s), so "slower than the relay's timeout" keeps
its meaning. A verdict may ask for earlier traffic (``warm_up_messages``),
held sessions and a probe to several recipients, so a rate or a recipient
limit is proven through the relay too; for greylisting and the like, every
later attempt is followed until the message is sent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from wire import connect, read_reply

from fakemx import FakeMX, Profile, stages
from fakemx.profiles import catalog
from fakemx.verdicts import RelayProbe

TIME_SCALE = 0.01
BODY = "\n".join(f"line {n:04d} " + "x" * 60 for n in range(64))  # ~4.5 KB


class Attempt(Protocol):
    @property
    def status(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def recipient(self) -> str: ...


class Relay(Protocol):
    def send(self, recipient: str | Sequence[str], body: str = ..., sender: str = ...) -> str: ...
    def wait_verdict(self, message_id: str, count: int = ..., timeout: float = ...,
                     recipient: str | None = ...) -> Sequence[Attempt]: ...
    def lines_about(self, port: int) -> list[str]: ...
    def drop_queue(self) -> None: ...
    def log_in(self, port: int, credentials: str) -> None: ...


AttemptT = TypeVar("AttemptT", bound=Attempt)


class LoggedRelay(Generic[AttemptT]):
    """The part both harnesses share: poll the relay's log for a message's attempts."""

    log: Path

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def send(self, recipient: str | Sequence[str], body: str = "fakemx probe",
             sender: str = "") -> str:
        raise NotImplementedError

    def drop_queue(self) -> None:
        raise NotImplementedError

    def verdicts(self, message_id: str, recipient: str | None = None) -> list[AttemptT]:
        raise NotImplementedError

    def wait_verdict(self, message_id: str, count: int = 1, timeout: float = 60,
                     recipient: str | None = None) -> list[AttemptT]:
        """Poll the log until ``count`` delivery attempts (to ``recipient``) are logged."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.verdicts(message_id, recipient)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
                raise TimeoutError(f"no verdict {count} for {message_id}; log tail:\n{tail}")
            time.sleep(0.05)


RelayT = TypeVar("RelayT", bound=LoggedRelay)  # type: ignore[type-arg]


@contextlib.contextmanager
def started(make: Callable[[Path], RelayT], prefix: str) -> Iterator[RelayT]:
    """A private relay instance in a fresh directory under /tmp, stopped and removed after."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    instance = make(root)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(root, ignore_errors=True)


def alive(pid: int) -> bool:
    """Is the process (one the harness started, by its pid) still there?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class PausedClock:
    """fakemx's clock, standing still until ``run()``, then running on from where it stood.

    The warm-up messages and the probe's first attempt all happen at one
    instant for fakemx's rate windows, however slow the machine (a "5/60s"
    window is 0.6 s at this scale); the relay's retries then see time pass.
    """

    def __init__(self) -> None:
        self._stood = time.monotonic()
        self._resumed: float | None = None

    def __call__(self) -> float:
        if self._resumed is None:
            return self._stood
        return self._stood + time.monotonic() - self._resumed

    def run(self) -> None:
        if self._resumed is None:
            self._resumed = time.monotonic()


def relay_profiles() -> list[Profile]:
    # DNS profiles need the relay to resolve through fakemx: tests/test_dns_*.py.
    return [p for p in catalog() if getattr(p, "dns", None) is None]


def domain(profile: Profile, expected: RelayProbe, port: int) -> str:
    """The recipient domain both harnesses route to fakemx's port with the verdict's TLS
    (an LMTP profile: to the relay's LMTP client)."""
    if profile.protocol is stages.Protocol.LMTP:
        return f"l{port}.test"
    if expected.sasl is not None:  # logs in (SMTP AUTH), TLS when offered
        return f"a{port}.test"
    prefix = "h" if expected.bad_helo else {
        "may": "p", "verify": "v", "encrypt": "e", "implicit": "w"
    }[expected.tls]
    return f"{prefix}{port}.test"


def probe(profile: Profile, relay: Relay, state: Path, expected: RelayProbe,
          accepted: Callable[[Attempt], bool]) -> None:
    """Send the verdict's probe through ``relay`` and hold its first attempt (and, for
    a later success, every attempt) to ``accepted``; the queue is emptied after."""
    try:
        _probe(profile, relay, state, expected, accepted)
    finally:
        relay.drop_queue()


def _probe(profile: Profile, relay: Relay, state: Path, expected: RelayProbe,
           accepted: Callable[[Attempt], bool]) -> None:
    clock = PausedClock()
    with FakeMX(profile, state_dir=state, time_scale=TIME_SCALE, clock=clock) as mx, \
            contextlib.ExitStack() as held:
        for _ in range(expected.hold_connections):
            sock = held.enter_context(connect(mx.host, mx.port))
            assert read_reply(sock).startswith(b"220")
        to = domain(profile, expected, mx.port)
        if expected.sasl is not None:
            relay.log_in(mx.port, expected.sasl)
        for n in range(1, expected.warm_up_messages + 1):  # one after the other, each sent
            warm_up = relay.wait_verdict(relay.send(f"warm{n}@{to}", BODY, expected.sender))
            assert [v.status for v in warm_up] == ["sent"], (n, warm_up)
        recipients = [f"{local_part}@{to}" for local_part in expected.local_parts]
        message_id = relay.send(recipients, BODY, sender=expected.sender)
        firsts = [relay.wait_verdict(message_id, recipient=r)[0] for r in recipients]
        clock.run()
        passed, limited = firsts[:expected.sent_recipients], firsts[expected.sent_recipients:]
        assert [v.status for v in passed] == ["sent"] * len(passed), firsts
        for first in limited:
            assert accepted(first), (first, expected)
        if expected.log:
            about_fakemx = relay.lines_about(mx.port)
            assert any(expected.log in line for line in about_fakemx), about_fakemx
        if expected.sent_on_attempt is None and not expected.eventually_sent:
            return
        later = [eventually_sent(relay, message_id, v.recipient, expected) for v in limited]
        assert all(len(attempts) == len(later[0]) for attempts in later), later
        # fakemx saw every attempt: one session each (the warm-ups' first), counted per
        # client address, and stored each recipient of the probe once.
        tries = expected.warm_up_messages + len(later[0])
        mx.wait_for(messages=expected.warm_up_messages + 1 + bool(passed))
        assert [s.attempt for s in mx.sessions] == list(range(1, tries + 1))
        stored = [r for m in mx.messages[expected.warm_up_messages:] for r in m.rcpt_tos]
        assert sorted(stored) == sorted(recipients), stored


def eventually_sent(relay: Relay, message_id: str, recipient: str,
                    expected: RelayProbe) -> Sequence[Attempt]:
    """Every attempt to ``recipient`` until it is sent: deferred ones, then the sent one."""
    attempts = relay.wait_verdict(message_id, count=expected.sent_on_attempt or 2,
                                  recipient=recipient)
    while attempts[-1].status != "sent" and len(attempts) < 10:
        attempts = relay.wait_verdict(message_id, count=len(attempts) + 1, recipient=recipient)
    assert attempts[-1].status == "sent", attempts
    assert all(v.status == "deferred" for v in attempts[:-1]), attempts
    if expected.sent_on_attempt is not None:
        assert len(attempts) == expected.sent_on_attempt, attempts
    return attempts
