"""Student mode: each student's own attempts, and the API that hides the scenario from them.

A class sends through one relay, so per client address every student would use
up the others' greylisting attempts; in the lab each sender has their own. The
students' token reads a lab whose cases are hidden until the trainer reveals
them, and filters the timeline by the student's own sender.
"""

from __future__ import annotations

import html
import smtplib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_harness import Running, running_api

from fakemx import FakeMX, classroom
from fakemx.api.views import StudentMode
from fakemx.profiles import catalog

TRAINER, STUDENTS = "trainer-token", "students-token"
GREYLIST = "4.4.7-greylist-attempts"  # 451 to attempts 1 and 2, then accepted


def rcpt_code(mx: FakeMX, sender: str) -> int:
    """One attempt through a real smtplib client: the reply to RCPT TO."""
    with smtplib.SMTP(mx.host, mx.port, timeout=5) as client:
        client.ehlo("relay.lab.fakemx.test")
        client.mail(sender)
        code, _ = client.rcpt("bob@case-07.lab.fakemx.test")
        return code


def test_each_sender_has_its_own_greylisting_attempts(tmp_path: Path) -> None:
    with FakeMX(GREYLIST, state_dir=tmp_path / "class", attempts_per_sender=True) as mx:
        alice = [rcpt_code(mx, "student01@students.lab.fakemx.test") for _ in range(3)]
        bob = [rcpt_code(mx, "student02@students.lab.fakemx.test") for _ in range(3)]
        mx.wait_for(ended=6)
        attempts = [s.attempt for s in sorted(mx.sessions, key=lambda s: s.id)]
    assert alice == bob == [451, 451, 250]  # the same client address for both
    assert attempts == [1, 2, 3, 1, 2, 3]


def test_per_client_the_second_student_gets_the_first_ones_attempts(tmp_path: Path) -> None:
    """The control: counted per client (fakemx's default), the relay's retries are one."""
    with FakeMX(GREYLIST, state_dir=tmp_path / "one") as mx:
        first = [rcpt_code(mx, "student01@students.lab.fakemx.test") for _ in range(2)]
        second = rcpt_code(mx, "student02@students.lab.fakemx.test")
    assert (first, second) == ([451, 451], 250)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Running]:
    names = ["sink", "case-01"]
    students = StudentMode(frozenset({"case-01"}))
    with running_api(tmp_path / "state", ["sink", "4.4.318-rst-after-rcpt"], names=names,
                     token=TRAINER, students=students, student_token=STUDENTS) as running:
        yield running


def send_as(mx: FakeMX, sender: str) -> None:
    with smtplib.SMTP(mx.host, mx.port, timeout=5) as client:
        client.ehlo("relay.lab.fakemx.test")
        client.mail(sender)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.rcpt("bob@case-01.lab.fakemx.test")


def test_students_see_a_case_by_its_name_until_it_is_revealed(lab: Running) -> None:
    student, trainer = lab.http(token=STUDENTS), lab.http(token=TRAINER)
    assert student.get("/api/role").json() == {"role": "student", "student_mode": True}
    hidden = student.get("/api/servers/case-01").json()
    assert (hidden["profile"], hidden["code"], hidden["title"], hidden["about"],
            hidden["students"]) == ("case-01", "", "", None, "hidden")
    assert student.get("/api/servers/case-01/profile").status_code == 403
    assert student.get("/api/servers/case-01/rules").status_code == 403
    # The healthy control is never hidden.
    assert student.get("/api/servers/sink").json()["profile"] == "sink"
    # The trainer sees it all, and a student may only look.
    assert trainer.get("/api/servers/case-01").json()["profile"] == "4.4.318-rst-after-rcpt"
    refused = student.put("/api/servers/case-01/listener", json={"state": "refuse"})
    assert refused.status_code == 403
    assert student.post("/api/servers/case-01/reveal").status_code == 403

    send_as(lab.server("case-01"), "student07@students.lab.fakemx.test")
    lab.server("case-01").wait_for(ended=1)
    [session] = student.get("/api/sessions", params={"server": "case-01"}).json()["items"]
    assert session["profile"] == "case-01"  # not the profile's name
    assert session["sender"] == "student07@students.lab.fakemx.test"
    assert session["ended_by"] == "fakemx reset (RST) after RCPT"  # the timeline is all there

    revealed = trainer.post("/api/servers/case-01/reveal")
    assert revealed.status_code == 200
    assert revealed.json()["students"] == "revealed"
    shown = student.get("/api/servers/case-01").json()
    assert (shown["profile"], shown["about"]["code"]) == ("4.4.318-rst-after-rcpt", "4.4.318")
    [session] = student.get("/api/sessions", params={"server": "case-01"}).json()["items"]
    assert session["profile"] == "4.4.318-rst-after-rcpt"
    assert trainer.delete("/api/servers/case-01/reveal").json()["students"] == "hidden"


def test_a_student_filters_the_timeline_by_their_own_sender(lab: Running) -> None:
    case = lab.server("case-01")
    for sender in ("student01@students.lab.fakemx.test", "student02@students.lab.fakemx.test",
                   "student01@students.lab.fakemx.test"):
        send_as(case, sender)
    case.wait_for(ended=3)
    student = lab.http(token=STUDENTS)
    mine = student.get("/api/sessions", params={"sender": "STUDENT01@"}).json()
    assert mine["total"] == 2
    assert {s["sender"] for s in mine["items"]} == {"student01@students.lab.fakemx.test"}
    # Each sender's attempts are not counted per sender here (a plain FakeMX).
    assert [s["attempt"] for s in mine["items"]] == [3, 1]


def test_a_wrong_token_is_neither_role(lab: Running) -> None:
    response = httpx.get(f"{lab.url}/api/servers", headers={"authorization": "Bearer nope"})
    assert response.status_code == 401


def test_the_sheet_gives_each_case_its_address_and_ndr_but_not_its_answer(
    tmp_path: Path,
) -> None:
    lab = classroom.cases(catalog(), student=True, state_dir=tmp_path)
    # case-001 ...: as many digits as the catalog needs, so the names sort as numbered
    width = len(str(len(lab) - 1))
    assert [case.name for case in lab[:2]] == ["sink", f"case-{1:0{width}d}"]
    # Drawn once per state dir: a restart keeps the names the sheet was printed with.
    again = classroom.cases(catalog(), student=True, state_dir=tmp_path)
    assert [(c.name, c.profile.name) for c in again] == [(c.name, c.profile.name) for c in lab]
    written = classroom.write_sheets(tmp_path / "sheets", lab)
    sheet_md, sheet_html, key = (path.read_text() for path in written)
    exercises = classroom.exercises(lab)
    assert len(exercises) > 50
    for item in exercises:
        if item.case.name == classroom.SINK:
            continue
        for sheet in (sheet_md, sheet_html):
            assert item.recipients[0] in sheet
            assert html.escape(item.ndr) in sheet or item.ndr in sheet
        assert f"`{item.case.profile.name}`" in key
    for case in lab[1:]:  # no profile name, and no scenario word, on the students' sheets
        assert case.profile.name not in sheet_md + sheet_html
        assert case.profile.about is not None
        assert case.profile.about.title not in sheet_md + sheet_html
    [rst] = [item for item in exercises if item.case.profile.name == "4.4.318-rst-after-rcpt"]
    assert rst.ndr == "450 4.4.318 Connection was closed abruptly"
    assert f"## {rst.case.name}" in sheet_md
    [greylist] = [item for item in exercises if item.case.profile.name == GREYLIST]
    assert greylist.ndr.startswith("none once a retry gets through (at attempt 3)")
    assert sheet_html.startswith("<!doctype html>")
    assert "@media print" in sheet_html


def end_of_data_code(mx: FakeMX, sender: str) -> int:
    with smtplib.SMTP(mx.host, mx.port, timeout=5) as client:
        client.ehlo("relay.lab.fakemx.test")
        client.mail(sender)
        client.rcpt("bob@case-09.lab.fakemx.test")
        code, _ = client.data(b"Subject: throttled\r\n\r\nhi\r\n")
        return code


def test_per_client_counts_are_each_senders_own(tmp_path: Path) -> None:
    """4.7.500 throttles a client's first 2 messages (a count per client): in the lab
    each student's, however many classmates sent before them through the same relay."""
    with FakeMX("4.7.500-server-busy", state_dir=tmp_path / "class",
                attempts_per_sender=True) as mx:
        alice = [end_of_data_code(mx, "student01@students.lab.fakemx.test") for _ in range(3)]
        bob = end_of_data_code(mx, "student02@students.lab.fakemx.test")
    with FakeMX("4.7.500-server-busy", state_dir=tmp_path / "one") as mx:
        together = [end_of_data_code(mx, f"student0{n}@students.lab.fakemx.test")
                    for n in (1, 1, 2)]
    assert (alice, bob) == ([451, 451, 250], 451)
    assert together == [451, 451, 250]  # the control: per client, the classmate's count
