#!/usr/bin/env python3
"""The container's health check: is fakemx ready, whatever profile it plays?

Installed in the image as ``fakemx-healthcheck``. It reads the same ``FAKEMX_*``
variables as fakemx (docs/run-anywhere.md) and needs only the standard library:

- with ``FAKEMX_API`` set: ``GET /api/version`` answers 200 (with the token of
  ``FAKEMX_API_TOKEN`` or ``FAKEMX_API_TOKEN_FILE``). The API starts after the
  SMTP listeners, and the check opens no SMTP session, so it works for a profile
  that refuses or resets connections and adds nothing to the journal;
- else: the SMTP port (``FAKEMX_BASE_PORT`` when ``FAKEMX_MODE=lab``, else
  ``FAKEMX_PORT``) accepts a TCP connection.

Exit 0 when ready, 1 with one line on stderr when not.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 2.0
ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1", "": "127.0.0.1"}


def _api_url(address: str) -> str:
    host, port = "127.0.0.1", address
    if address.startswith("["):
        host, _, port = address[1:].partition("]")
        port = port.removeprefix(":")
    elif ":" in address:
        host, _, port = address.rpartition(":")
    host = ANY_ADDRESS.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/api/version"


def _token() -> str:
    token = os.environ.get("FAKEMX_API_TOKEN", "")
    path = os.environ.get("FAKEMX_API_TOKEN_FILE", "")
    if not token and path:
        with open(path, encoding="utf-8") as file:
            token = file.read().removesuffix("\n").removesuffix("\r")
    return token


def check_api(address: str) -> str | None:
    """None when the API answers 200, else what went wrong."""
    url = _api_url(address)
    request = urllib.request.Request(url)
    token = _token()
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
            return None if answer.status == 200 else f"{url}: HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{url}: {exc}"


def check_smtp(host: str, port: int) -> str | None:
    """None when the port accepts a connection, else what went wrong."""
    try:
        with socket.create_connection((ANY_ADDRESS.get(host, host), port), TIMEOUT_SECONDS):
            return None
    except OSError as exc:
        return f"SMTP {host}:{port}: {exc}"


def main() -> int:
    env = os.environ
    api = env.get("FAKEMX_API", "")
    if api:
        problem = check_api(api)
    else:
        lab = env.get("FAKEMX_MODE", "") == "lab"
        port = env.get("FAKEMX_BASE_PORT" if lab else "FAKEMX_PORT", "") or (
            "2600" if lab else "2525")
        problem = check_smtp(env.get("FAKEMX_HOST", "") or "127.0.0.1", int(port))
    if problem is not None:
        print(f"fakemx-healthcheck: not ready: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
