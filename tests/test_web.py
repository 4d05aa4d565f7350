"""The lab page in a real headless browser (Debian's chromium driven by Playwright).

The page loads, a message sent with smtplib appears live (server-sent events),
and a scenario switched from the page's own control makes the next session
fail as that scenario says. A screenshot is saved in the test's tmp dir (and
to docs/web-page.png with FAKEMX_UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import os
import shutil
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from api_harness import Running, running_api, send

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
WAIT_MS = 5000
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "web-page.png"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                  "(apt-get install chromium); .ci/run installs it")


@pytest.fixture
def page() -> Iterator[Page]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs `pip install playwright`")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             timeout=WAIT_MS * 3)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            browser.close()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Running]:
    names = ["sink", "4.4.318-rst-after-mail", "4.4.7-greylist-attempts"]
    with running_api(tmp_path / "state", names, names=names) as running:
        yield running


def test_page_shows_sessions_live_and_switches_scenarios(
    page: Page, lab: Running, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page.goto(f"{lab.url}/")
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#scenario-profile")).to_have_text("sink")
    expect(page.locator("#scenario-title")).to_contain_text("Healthy sink")
    expect(page.locator("#server-list .server")).to_have_count(3)

    sink = lab.server("sink")
    send(sink, subject="Hello from the lab")
    accepted = page.locator("#timeline li.session[data-outcome='quit']")
    expect(accepted).to_have_count(1)  # arrived through /api/events, no reload
    expect(accepted.locator(".ended-by")).to_have_text("client sent QUIT")
    expect(page.locator("#messages .subject")).to_have_text(["Hello from the lab"])

    page.select_option("#scenario-select", "4.4.7-defer-rcpt")
    page.click("#switch-button")
    expect(page.locator("#scenario-profile")).to_have_text("4.4.7-defer-rcpt")
    expect(page.locator("#notice")).to_contain_text("now plays 4.4.7-defer-rcpt")
    # what each sender reports, from the profile's [about.postfix], [about.exim], [about.smtplib]
    expect(page.locator("#scenario table.reports th")).to_have_text(["Postfix", "Exim", "smtplib"])
    expect(page.locator("#scenario table.reports")).to_contain_text("SMTPRecipientsRefused 450")

    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(sink)
    assert refused.value.recipients["bob@example.test"][0] == 450
    failed = page.locator("#timeline li.session[data-profile='4.4.7-defer-rcpt']")
    expect(failed).to_have_count(1)
    expect(failed.locator(".event.broke .text")).to_contain_text("450")
    expect(failed.locator(".diagnosis .relay-sees")).to_contain_text("450 4.2.0")

    # Another server of the lab, picked in the sidebar, breaks the connection itself.
    page.click("#server-list .server[data-server='4.4.318-rst-after-mail']")
    expect(page.locator("#scenario-profile")).to_have_text("4.4.318-rst-after-mail")
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        send(lab.server("4.4.318-rst-after-mail"))
    reset = page.locator("#timeline li.session[data-outcome='dropped_rst']")
    expect(reset.locator(".ended-by")).to_have_text("fakemx reset (RST) after MAIL")
    expect(reset.locator(".event.broke")).to_have_count(1)

    page.click("#server-list .server[data-server='sink']")
    expect(page.locator("#timeline li.session")).to_have_count(2)
    shot = tmp_path / "web-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("FAKEMX_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, DOCS_SCREENSHOT)
