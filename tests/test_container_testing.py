"""Issue #18, ``fakemx.testing.FakeMXContainer`` (testcontainers-python) on the image
built here, used as the in-process fixture is; and the docs' example of it, run."""

from __future__ import annotations

import re
import smtplib
import ssl

import pytest
from containers import DOCS, NEEDS_ENGINE, free_ports, send
from processes import TIMEOUT

pytestmark = NEEDS_ENGINE



@pytest.mark.usefixtures("testcontainers_env")
def test_fakemx_container_is_used_as_the_fixture_is(image: str) -> None:
    from fakemx.testing import FakeMXContainer

    # Published on ports outside the ephemeral range (tests/containers.py says why).
    smtp = free_ports(2)
    with FakeMXContainer(image, profile="4.4.7-defer-rcpt").with_bind_ports(
            2525, smtp).with_bind_ports(8025, smtp + 1) as mx:
        with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as client:
            client.ehlo("relay.example")
            assert client.mail("alice@sender.example")[0] == 250
            assert client.rcpt("bob@dest.example")[0] == 450
        mx.wait_for(ended=1)
        [session] = mx.sessions
        assert (session["profile"], session["helo"], session["sender"], session["outcome"]) \
            == ("4.4.7-defer-rcpt", "relay.example", "alice@sender.example", "quit")
        replies = [e["text"] for e in session["events"] if e["kind"] == "server"]
        assert any(reply.startswith("450 4.2.0 <bob@dest.example>") for reply in replies)
        assert mx.messages == []

        mx.load("sink")
        send(mx.host, mx.port, "hello from a container test")
        mx.wait_for(messages=1)
        [message] = mx.find_messages(subject="hello")
        assert message["mail_from"] == "alice@sender.example"
        assert mx.message(message["id"])["text"] == "body\r\n"
        assert mx.raw_message(message["id"]).endswith(b"\r\n\r\nbody\r\n")
        assert len(mx.sessions) == 2

        mx.reset()
        assert (mx.sessions, mx.messages) == ([], [])
        with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as client:
            client.starttls(context=trusting(mx.ca_pem))  # fakemx's CA verifies its cert
            assert client.noop()[0] == 250

        mx.set_listener("refuse")
        with pytest.raises(ConnectionRefusedError):
            smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT)


def trusting(ca_pem: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    context.check_hostname = False  # the certificate names mx.fakemx.test, not localhost
    return context


@pytest.mark.usefixtures("testcontainers_env")
def test_fakemx_container_that_cannot_start_says_why(image: str) -> None:
    from fakemx.testing import FakeMXContainer, FakeMXNotReady

    with pytest.raises(FakeMXNotReady) as failed:
        FakeMXContainer(image, profile="no-such-profile").start()
    assert str(failed.value).startswith("fakemx container ended (")
    assert "fakemx: unknown profile 'no-such-profile'" in str(failed.value)  # its log


@pytest.mark.usefixtures("testcontainers_env")
def test_the_docs_testcontainers_example(image: str) -> None:
    """The Python block of docs/run-anywhere.md, run as written but for the image's name."""
    text = (DOCS / "run-anywhere.md").read_text()
    [example] = [block for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL)
                 if "FakeMXContainer" in block]
    assert 'FakeMXContainer("fakemx", ' in example
    exec(compile(example.replace('FakeMXContainer("fakemx", ', f"FakeMXContainer({image!r}, "),
                 "docs/run-anywhere.md", "exec"), {})
