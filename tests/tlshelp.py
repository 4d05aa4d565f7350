"""Client-side helpers for the TLS tests: real sockets, every call bounded by a timeout."""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from wire import TIMEOUT, command, connect, read_reply

from fakemx import FakeMX

HOSTNAME = "mx.fakemx.test"  # fakemx's default server name, which its certificates carry
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


def verifying_context(mx: FakeMX) -> ssl.SSLContext:
    """What a relay that verifies uses: CERT_REQUIRED, host name checked, fakemx's CA only."""
    context = ssl.create_default_context(cafile=str(mx.ca_path))
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    return context


def plain_until_starttls(mx: FakeMX) -> socket.socket:
    """Greeting, EHLO, STARTTLS answered 220: the socket is ready for the ClientHello."""
    sock = connect(mx.host, mx.port)
    assert read_reply(sock).startswith(b"220 ")
    assert b"STARTTLS" in command(sock, "EHLO client.example.net")
    assert command(sock, "STARTTLS").startswith(b"220 ")
    return sock


def starttls(mx: FakeMX, context: ssl.SSLContext, hostname: str = HOSTNAME) -> ssl.SSLSocket:
    """A raw STARTTLS session; raises what the client's handshake raises."""
    sock = plain_until_starttls(mx)
    try:
        return context.wrap_socket(sock, server_hostname=hostname)
    except BaseException:
        sock.close()
        raise


def served_leaf(mx: FakeMX) -> x509.Certificate:
    """The certificate fakemx presents, fetched without verifying it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with starttls(mx, context) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def fetch(url: str) -> bytes:
    """HTTP GET on loopback, never through a proxy from the environment."""
    assert url.startswith("http://127.0.0.1:"), url
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=TIMEOUT) as response:
        body: bytes = response.read()
        return body


def post(url: str, body: bytes, content_type: str) -> bytes:
    assert url.startswith("http://127.0.0.1:"), url
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    with opener.open(request, timeout=TIMEOUT) as response:
        answer: bytes = response.read()
        return answer


def openssl(*args: str, stdin: bytes = b"") -> str:
    """Run the openssl command; its stdout and stderr together."""
    assert OPENSSL is not None
    done = subprocess.run([OPENSSL, *args], input=stdin, capture_output=True, timeout=TIMEOUT * 2,
                          check=False)
    return (done.stdout + done.stderr).decode("utf-8", "replace")


def s_client(mx: FakeMX, *extra: str, starttls_smtp: bool = True) -> str:
    args = ["s_client", "-connect", f"{mx.host}:{mx.port}", "-servername", HOSTNAME,
            "-verify_hostname", HOSTNAME, "-CAfile", str(mx.ca_path), "-showcerts", *extra]
    if starttls_smtp:
        args += ["-starttls", "smtp"]
    return openssl(*args, stdin=b"QUIT\r\n")


def pem_blocks(text: str) -> list[str]:
    return re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", text, re.S)


def write_pems(directory: Path, name: str, pems: list[str]) -> Path:
    path = directory / name
    path.write_text("".join(p if p.endswith("\n") else p + "\n" for p in pems))
    return path
