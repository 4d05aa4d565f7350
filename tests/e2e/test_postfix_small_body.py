"""The body-stage drops through a real Postfix with a message of a hundred bytes.

tests/e2e/test_postfix.py proves every verdict with a 4.5 KB probe; the
``*-during-body`` profiles fire on the body's first bytes, so a short message,
which used to pass them untouched, meets them too and gets the same verdict.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from postfix import PrivatePostfix

from fakemx import FakeMX, load_profile

HOST = "127.0.0.1[127.0.0.1]"
SHORT_BODY = "A short message."  # with its headers, about 150 bytes: one read


@pytest.mark.parametrize("name", ["4.4.318-fin-during-body", "4.4.318-rst-during-body"])
def test_a_short_message_meets_the_body_drop(name: str, relay: PrivatePostfix,
                                            fakemx_state: Path) -> None:
    profile = load_profile(name)
    assert profile.about is not None
    expected = profile.about.postfix
    assert expected is not None
    with FakeMX(profile, state_dir=fakemx_state) as mx:
        message_id = relay.send(f"bob@p{mx.port}.test", SHORT_BODY)
        (first,) = relay.wait_verdict(message_id)[:1]
        mx.wait_for(ended=1)
    accepted = [(v.status, v.dsn, v.reason.replace("{host}", HOST))
                for v in (expected, *expected.alternatives)]
    assert any((first.status, first.dsn) == (status, dsn) and reason in first.reason
               for status, dsn, reason in accepted), (first, accepted)
    assert not mx.messages  # nothing accepted, nothing stored
