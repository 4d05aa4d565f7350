"""The lab page in a real headless browser (Debian's chromium driven by Playwright).

The page loads, a message sent with smtplib appears live (server-sent events),
and a scenario switched from the page's own control makes the next session
fail as that scenario says. A screenshot is saved in the test's tmp dir (and
to docs/web-page.png with FAKEMX_UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from api_harness import Running, running_api, send

from fakemx import FakeMX

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

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


TRAINER, STUDENTS = "trainer-token", "students-token"


@pytest.fixture
def browser() -> Iterator[Browser]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs `pip install playwright`")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=CHROMIUM_ARGS, timeout=WAIT_MS * 3)
        try:
            yield launched
        finally:
            launched.close()


def open_as(browser: Browser, url: str, token: str, errors: list[str]) -> Page:
    """A page of its own (own cookies) opened with ``token``, as a student or the trainer;
    its JavaScript errors go to ``errors``."""
    page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{url}/?token={token}")
    page.wait_for_url(f"{url}/")
    return page


@pytest.fixture
def classroom(tmp_path: Path) -> Iterator[Running]:
    from fakemx.api.views import StudentMode

    names = ["sink", "case-01", "case-02", "case-03"]
    profiles = ["sink", "4.4.318-rst-after-rcpt", "4.4.7-greylist-attempts",
                "4.4.316-connection-refused"]
    students = StudentMode(frozenset(names[1:]))
    with running_api(tmp_path / "state", profiles, names=names, token=TRAINER,
                     students=students, student_token=STUDENTS) as running:
        yield running


def send_as(mx: FakeMX, sender: str) -> None:
    """One message through smtplib, from ``sender``, whatever fakemx does with it."""
    with contextlib.suppress(smtplib.SMTPException, ConnectionError), \
            smtplib.SMTP(mx.host, mx.port, timeout=5) as client:
        client.sendmail(sender, ["bob@case.lab.fakemx.test"], "Subject: exercise\r\n\r\nhi\r\n")


def test_student_view_hides_the_answer_and_the_trainer_reveals_it(
    browser: Browser, classroom: Running, tmp_path: Path
) -> None:
    """The 4.4.318 exercise from the page alone: a student sees where the session broke,
    not the scenario's name, until the trainer reveals it."""
    from playwright.sync_api import expect

    errors: list[str] = []
    student = open_as(browser, classroom.url, STUDENTS, errors)
    expect(student.locator("#live")).to_have_text("live")
    student.click("#server-list .server[data-server='case-01']")
    expect(student.locator("#scenario-title")).to_have_text("case-01")
    expect(student.locator("#scenario-hidden")).to_be_visible()
    expect(student.locator(".controls")).to_be_hidden()
    expect(student.locator("#diagnose")).to_be_hidden()  # a POST; its verdict names it
    student.fill("#sender-filter", "student07@")
    student.press("#sender-filter", "Enter")

    case = classroom.server("case-01")
    send_as(case, "student07@students.lab.fakemx.test")
    send_as(case, "student08@students.lab.fakemx.test")  # a classmate: not on this page
    case.wait_for(ended=2)
    mine = student.locator("#timeline li.session")
    expect(mine).to_have_count(1)
    expect(mine.locator(".session-sender")).to_have_text("student07@students.lab.fakemx.test")
    expect(mine.locator(".ended-by")).to_have_text("fakemx reset (RST) after RCPT")
    expect(mine.locator(".event.broke .text")).to_contain_text("after RCPT")
    text = student.locator("body").inner_text()
    for answer in ("4.4.318-rst-after-rcpt", "Connection was closed", "closed abruptly"):
        assert answer not in text
    assert "rst-after" not in student.title() + student.url

    trainer = open_as(browser, classroom.url, TRAINER, errors)
    trainer.click("#server-list .server[data-server='case-01']")
    expect(trainer.locator("#scenario-profile")).to_have_text("4.4.318-rst-after-rcpt")
    expect(trainer.locator("#timeline li.session")).to_have_count(2)  # the whole class
    trainer.click("#reveal-button")
    expect(trainer.locator("#notice")).to_contain_text("revealed to the students")

    # Live on the student's page: the scenario, its code and the relay's words.
    expect(student.locator("#scenario-profile")).to_have_text("4.4.318-rst-after-rcpt")
    expect(student.locator(".relay-sees").first).to_contain_text("while sending RCPT TO")
    expect(student.locator("#scenario-hidden")).to_have_count(0)
    student.screenshot(path=str(tmp_path / "student.png"), full_page=True)
    assert not errors


def test_page_says_what_the_relay_sees_where_no_session_comes(
    browser: Browser, classroom: Running
) -> None:
    from playwright.sync_api import expect

    errors: list[str] = []
    trainer = open_as(browser, classroom.url, TRAINER, errors)
    trainer.click("#server-list .server[data-server='case-03']")  # refuses: no session, ever
    expect(trainer.locator("#timeline-empty")).to_contain_text("Connection refused")
    expect(trainer.locator("#timeline-empty")).not_to_contain_text("Point a relay")
    trainer.click("#listener-buttons button[data-state='blackhole']")
    expect(trainer.locator("#timeline-empty")).to_contain_text("Connection timed out")

    # A greylisted session ends with the client's QUIT; its headline shows the 451.
    trainer.click("#server-list .server[data-server='case-02']")
    send_as(classroom.server("case-02"), "student01@students.lab.fakemx.test")
    headline = trainer.locator("#timeline li.session .ended-by")
    expect(headline).to_contain_text("451 4.7.1")
    expect(headline).to_contain_text("client sent QUIT")
    for name in ("case-01", "case-02", "case-03", "sink"):
        trainer.click(f"#server-list .server[data-server='{name}']")
        expect(trainer.locator("#scenario-profile")).to_be_visible()
        assert "{host}" not in trainer.locator("body").inner_text(), name
    assert not errors


def test_the_exercise_sheet_prints(browser: Browser, tmp_path: Path) -> None:
    """The printable sheet: one section per exercise, and chromium prints it to a PDF."""
    from playwright.sync_api import expect

    from fakemx import classroom
    from fakemx.profiles import catalog

    lab = classroom.cases(catalog(), student=True, state_dir=tmp_path)
    sheet = classroom.write_sheets(tmp_path / "sheets", lab)[1]
    page = browser.new_context().new_page()
    page.goto(sheet.as_uri())
    cases = page.locator("section.case")
    expect(cases).to_have_count(len(classroom.exercises(lab)) - 1)  # the control is above
    expect(cases.first.locator(".ndr")).not_to_be_empty()
    assert page.title() == "fakemx lab: exercise sheet"
    printed = tmp_path / "sheet.pdf"
    page.pdf(path=str(printed), format="A4")
    assert printed.read_bytes().startswith(b"%PDF")
    assert printed.stat().st_size > 20_000
