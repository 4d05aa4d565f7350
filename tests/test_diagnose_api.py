"""``POST /api/servers/{name}/diagnose`` and the lab page's "diagnose this server" button.

Real HTTP (httpx) to a real API over running fakemx servers; the page in a real
headless chromium. The endpoint probes only fakemx's own servers, by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from api_harness import Running, running_api
from test_web import CHROMIUM, page  # noqa: F401 (the browser fixture)

if TYPE_CHECKING:
    from playwright.sync_api import Page

NAMES = ["sink", "4.4.317-greeting-421", "4.4.312-null-mx"]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Running]:
    with running_api(tmp_path / "state", NAMES, names=NAMES) as running:
        yield running


def test_the_endpoint_gives_the_steps_and_the_verdict(lab: Running) -> None:
    http = lab.http()
    healthy = http.post("/api/servers/sink/diagnose", json={"rcpt": "bob@example.test"})
    assert healthy.status_code == 200, healthy.text
    body = healthy.json()
    assert body["verdict"]["code"] == "2.0.0"
    assert body["verdict"]["healthy"] is True
    assert [s["name"] for s in body["steps"] if s["severity"] == "ok"] == [
        "connect", "greeting", "ehlo", "starttls", "tls", "certificate", "mail", "rcpt", "quit"]
    assert "never DATA, never a message" in body["text"]
    assert lab.server("sink").messages == []

    refused = http.post("/api/servers/4.4.317-greeting-421/diagnose").json()
    assert refused["verdict"]["code"] == "4.4.317"
    assert refused["verdict"]["profiles"] == ["4.4.317-greeting-421"]
    assert "FAIL greeting" in refused["text"]

    # A profile with a zone is probed by its mail domain, through its own DNS.
    null_mx = http.post("/api/servers/4.4.312-null-mx/diagnose").json()
    assert null_mx["target"].startswith("example.test:")
    assert null_mx["verdict"]["profiles"] == ["4.4.312-null-mx"]


def test_only_fakemx_servers_by_name_and_bad_input_is_refused(lab: Running) -> None:
    http = lab.http()
    assert http.post("/api/servers/mx.google.com/diagnose").status_code == 404
    bad = http.post("/api/servers/sink/diagnose", json={"rcpt": "x\r\nDATA"})
    assert bad.status_code == 422
    assert "rcpt" in bad.json()["error"]
    other = http.post("/api/servers/sink/diagnose", json={"target": "192.0.2.1"})
    assert other.status_code == 422


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")
def test_the_page_button_shows_the_same_steps(page: Page, lab: Running) -> None:  # noqa: F811
    from playwright.sync_api import expect

    page.goto(f"{lab.url}/")
    section = page.locator("#diagnose")
    expect(section.locator("#diagnose-server option")).to_have_count(len(NAMES))
    section.locator("#diagnose-server").select_option("4.4.317-greeting-421")
    section.locator("#diagnose-button").click()
    expect(section.locator("#diagnose-verdict")).to_contain_text("4.4.317")
    expect(section.locator("#diagnose-output")).to_contain_text("FAIL greeting  421 4.3.2")
    expect(section.locator("#diagnose-output")).to_contain_text("verdict: 4.4.317")
