"""fakemx in a container for tests, with testcontainers-python: ``FakeMXContainer``.

The in-process ``FakeMX`` (and the pytest fixture) runs fakemx in the test's own
process; this runs the image (``docker build -t fakemx .``) instead, for a suite that
wants the server as its CI will have it, or that does not run Python::

    from fakemx.testing import FakeMXContainer

    with FakeMXContainer("fakemx", profile="4.4.7-defer-rcpt") as mx:
        with smtplib.SMTP(mx.host, mx.port) as client:
            ...                                   # 450 on RCPT
        mx.wait_for(ended=1)
        assert mx.sessions[0]["stage"] == "rcpt"

It starts the image's default command (one profile and its HTTP API, configured by
``FAKEMX_*`` variables), waits until ``GET /api/version`` answers, and reads sessions
and messages over that API, as a test in any language would (docs/run-anywhere.md).
Sessions and messages are the API's JSON objects, oldest first as ``FakeMX`` lists them.

Needs ``pip install 'fakemx[testcontainers]'``; fakemx itself never imports this module.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, Self

try:
    from testcontainers.core.container import DockerContainer
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "fakemx.testing needs testcontainers: pip install 'fakemx[testcontainers]'"
    ) from exc

SMTP_PORT = 2525
API_PORT = 8025
# The API's largest page (fakemx/api/models.py MAX_PAGE_SIZE): lists are read in pages.
_PAGE = 200
_POLL_SECONDS = 0.1


class FakeMXNotReady(RuntimeError):
    """The container exited, or its API did not answer in time (the message has its log)."""


class FakeMXContainer(DockerContainer):
    """One fakemx container: ``profile`` served on SMTP port 2525 and the API on 8025,
    each published on a free host port (``host``/``port``, ``api_url``).

    ``token`` is the API's bearer token (a random one if not given); ``time_scale`` and
    ``seed`` are ``FAKEMX_TIME_SCALE`` and ``FAKEMX_SEED``; ``env`` adds other
    ``FAKEMX_*`` variables. Any other keyword goes to testcontainers' ``DockerContainer``.
    """

    def __init__(
        self,
        image: str = "fakemx",
        profile: str = "sink",
        *,
        token: str | None = None,
        time_scale: float | None = None,
        seed: int | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(image, **kwargs)
        self.token = token or secrets.token_hex(16)
        self.ready_timeout = ready_timeout
        variables = {"FAKEMX_PROFILE": profile, "FAKEMX_API": f"0.0.0.0:{API_PORT}",
                     "FAKEMX_API_TOKEN": self.token}
        if time_scale is not None:
            variables["FAKEMX_TIME_SCALE"] = repr(time_scale)
        if seed is not None:
            variables["FAKEMX_SEED"] = str(seed)
        for name, value in {**variables, **(env or {})}.items():
            self.with_env(name, value)
        self.with_exposed_ports(SMTP_PORT, API_PORT)
        self._server_name: str | None = None

    # region start ------------------------------------------------------------------

    def start(self) -> Self:
        super().start()
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        """Poll ``GET /api/version`` until it answers 200 (the API starts after the SMTP
        listener, so SMTP is ready too, whatever the profile does to connections)."""
        deadline = time.monotonic() + self.ready_timeout
        problem = "no answer yet"
        while time.monotonic() < deadline:
            wrapped = self.get_wrapped_container()
            wrapped.reload()
            if wrapped.status not in ("created", "running"):
                raise FakeMXNotReady(f"fakemx container ended ({wrapped.status}):"
                                     f" {self._log_tail()}")
            try:
                self.api("GET", "/api/version", timeout=2.0)
                return
            except (OSError, urllib.error.URLError, ValueError) as exc:
                problem = str(exc)
            time.sleep(_POLL_SECONDS)
        raise FakeMXNotReady(f"fakemx API not ready after {self.ready_timeout:g} s"
                             f" ({problem}): {self._log_tail()}")

    def _log_tail(self) -> str:
        stdout, stderr = self.get_logs()
        text = (stdout + stderr).decode("utf-8", "replace").strip()
        return text[-2000:] or "(no output)"

    # endregion
    # region addresses --------------------------------------------------------------

    @property
    def host(self) -> str:
        """Where the published ports are (testcontainers' container host)."""
        return self.get_container_host_ip()

    @property
    def port(self) -> int:
        """The host port of fakemx's SMTP listener."""
        return int(self.get_exposed_port(SMTP_PORT))

    @property
    def api_url(self) -> str:
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.get_exposed_port(API_PORT)}"

    @property
    def server_name(self) -> str:
        """The server's name in the API (``GET /api/servers``)."""
        if self._server_name is None:
            self._server_name = str(self.api("GET", "/api/servers")[0]["name"])
        return self._server_name

    # endregion
    # region the API ----------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None,
            query: Mapping[str, str | int | float] | None = None,
            *, timeout: float = 10.0) -> Any:
        """One API call with the token; its JSON answer. HTTPError for a status >= 400."""
        raw = self.api_bytes(method, path, body, query, timeout=timeout)
        return json.loads(raw) if raw else None

    def api_bytes(self, method: str, path: str, body: Any = None,
                  query: Mapping[str, str | int | float] | None = None,
                  *, timeout: float = 10.0) -> bytes:
        url = self.api_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={
            "authorization": f"Bearer {self.token}", "content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            content: bytes = answer.read()
            return content

    def _every(self, path: str, query: Mapping[str, str | int | float] | None = None
               ) -> list[dict[str, Any]]:
        """Every item of a newest-first page list, oldest first."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.api("GET", path, query={**(query or {}), "limit": _PAGE,
                                                "offset": len(items)})
            items += page["items"]
            if not page["items"] or len(items) >= page["total"]:
                return items[::-1]

    @property
    def sessions(self) -> list[dict[str, Any]]:
        """Every connection since the last ``reset()``, oldest first (``GET /api/sessions``)."""
        return self._every("/api/sessions")

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Accepted messages since the last ``reset()``, oldest first: ``mail_from``,
        ``rcpt_tos``, ``subject``... (``GET /api/messages``)."""
        return self._every("/api/messages")

    def find_messages(self, **search: str | int | float) -> list[dict[str, Any]]:
        """``GET /api/messages`` with ``sender``, ``recipient``, ``subject``, ``since``,
        ``until``; oldest first."""
        return self._every("/api/messages", search)

    def message(self, message_id: int) -> dict[str, Any]:
        """One message parsed: headers, text, html, attachments."""
        found: dict[str, Any] = self.api("GET", f"/api/messages/{message_id}")
        return found

    def raw_message(self, message_id: int) -> bytes:
        """One message exactly as received."""
        return self.api_bytes("GET", f"/api/messages/{message_id}/raw")

    def wait_for(self, *, sessions: int | None = None, ended: int | None = None,
                 messages: int | None = None, timeout: float = 5.0) -> None:
        """Poll until so many sessions (started/ended) and messages exist; TimeoutError if not
        (``FakeMX.wait_for``)."""
        deadline = time.monotonic() + timeout
        while True:
            listed = self.sessions
            closed = sum(s["outcome"] != "open" for s in listed)
            stored = len(self.messages) if messages is not None else 0
            if ((sessions is None or len(listed) >= sessions)
                    and (ended is None or closed >= ended)
                    and (messages is None or stored >= messages)):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"fakemx: still {len(listed)} sessions ({closed} ended),"
                                   f" {stored} messages after {timeout:g} s")
            time.sleep(_POLL_SECONDS)

    def reset(self) -> None:
        """Forget sessions, messages in memory, attempt counters (``FakeMX.reset``)."""
        self.api("POST", f"/api/servers/{self._quoted_name()}/reset")

    def load(self, profile: str) -> None:
        """Switch to a catalog profile by name (``FakeMX.load``)."""
        self.api("PUT", f"/api/servers/{self._quoted_name()}/profile", {"catalog": profile})

    def set_listener(self, state: str) -> None:
        """``open``, ``refuse`` (RST) or ``blackhole`` (no SYN-ACK)."""
        self.api("PUT", f"/api/servers/{self._quoted_name()}/listener", {"state": state})

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate fakemx's TLS certificates chain to: give it to the client."""
        return self.api_bytes("GET", "/api/ca.pem")

    def _quoted_name(self) -> str:
        return urllib.parse.quote(self.server_name, safe="")

    # endregion
