"""Profile files: validation into one-line errors that name the file, the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakemx import Profile, ProfileError, UnknownProfileError, load_profile, profile_from_data
from fakemx.cli import main
from fakemx.lint import lint
from fakemx.profiles import catalog, load_file


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[rules]]\nstage = "mail"\nreply = { code = 42 }',
         "rules[0].reply.code: 42 is not an SMTP reply code (use 200-599)"),
        ('[[rules]]\nstage = "lunch"\ndrop = "fin"',
         "rules[0].stage: Input should be 'connect', 'greeting'"),
        ('[[rules]]\nstage = "mail"',
         "rules[0]: a rule needs exactly one action of reply, drop, stall, accept,"
         " strip_extensions, mask_banner, handshake"),  # more follow; (found none)
        ('[[rules]]\nstage = "mail"\ndrop = "fin"\nreply = { code = 450 }',
         "(found reply, drop)"),
        ('[[rules]]\nstage = "mail"\ndrop = "fn"', "rules[0].drop: Input should be 'fin' or 'rst'"),
        ('[[rules]]\nstage = "mail"\nwhen = { attempts = 2 }\ndrop = "fin"',
         "rules[0].when.attempts: Extra inputs are not permitted (remove it or fix its spelling"),
        ('[[rules]]\nstage = "rcpt"\nwhen = { client_ip = ["nope"] }\ndrop = "fin"',
         "rules[0].when.client_ip: 'nope' is not an IP address or network"),
        ('[[rules]]\nstage = "mail"\nstrip_extensions = ["STARTTLS"]',
         "strip_extensions only applies at stage 'ehlo'"),
        ('listener = "closed"', "listener: Input should be 'open', 'refuse' or 'blackhole'"),
        ("rules = [", "not valid TOML"),
        ('[about]\ncode = "4.4"\ntitle = "t"\nrelay_sees = "r"', "about.code: String should match"),
        # A line break in the banner would add reply lines of the profile's making.
        ('[[rules]]\nstage = "greeting"\nmask_banner = "*****\\r\\n250 injected"',
         "rules[0].mask_banner: must be one line"),
        ('[[rules]]\nstage = "greeting"\nmask_banner = "*****\\n220 again"',
         "rules[0].mask_banner: must be one line"),
        ('[[rules]]\nstage = "mail"\nname = "two\\nlines"\ndrop = "fin"',
         "rules[0].name: must be one line"),
        ('name = "a\\rb"', "name: must be one line"),
        # 0 used to mean "no limit" silently; fakemx always enforces a size.
        ("max_message_size = 0", "max_message_size: 0 is not a size"),
        ("max_message_size = -1", "max_message_size: -1 is not a size"),
        # TOML has inf and nan; no timer waits that long, no draw meets nan.
        ("idle_timeout_seconds = inf", "idle_timeout_seconds: Input should be a finite number"),
        ("idle_timeout_seconds = nan", "idle_timeout_seconds: Input should be a finite number"),
        ('[[rules]]\nstage = "mail"\nstall = { seconds = inf }',
         "rules[0].stall.seconds: Input should be a finite number"),
        ('[[rules]]\nstage = "mail"\nwhen = { within_seconds = inf }\ndrop = "fin"',
         "rules[0].when.within_seconds: Input should be a finite number"),
        ('[[rules]]\nstage = "mail"\nwhen = { probability = nan }\ndrop = "fin"',
         "rules[0].when.probability: Input should be a finite number"),
        # counts, rates, negation, times and after (issue #14)
        ('[[rules]]\nstage = "mail"\nwhen = { messages = { above = 3 } }\ndrop = "fin"',
         "rules[0].when.messages.per: Field required (add this field)"),
        ('[[rules]]\nstage = "mail"\nwhen = { messages = { per = "client" } }\ndrop = "fin"',
         "rules[0].when.messages: give above = N (a total) or rate"),
        ('[[rules]]\nstage = "mail"\nwhen = { messages = { rate = "5 per minute",'
         ' per = "client" } }\ndrop = "fin"',
         "rules[0].when.messages.rate: '5 per minute' is not a rate: write EVENTS/WINDOW"),
        ('[[rules]]\nstage = "mail"\nwhen = { messages = { rate = "5/0s", per = "client" } }'
         '\ndrop = "fin"', "'5/0s' is not a rate"),
        ('[[rules]]\nstage = "mail"\nwhen = { sessions = { above = 1, per = "session" } }'
         '\ndrop = "fin"',
         "rules[0].when: sessions cannot be counted per session (use per = one of client,"
         " server)"),
        ('[[rules]]\nstage = "mail"\nwhen = { messages = { above = 1, per = "message" } }'
         '\ndrop = "fin"', "messages cannot be counted per message"),
        ('[[rules]]\nstage = "mail"\nwhen = { messages = { above = 1, per = "ip" } }'
         '\ndrop = "fin"', "rules[0].when.messages.per: Input should be 'client', 'sender'"),
        ('[[rules]]\nstage = "mail"\nwhen = { not = { hello = ["x"] } }\ndrop = "fin"',
         "rules[0].when.not.hello: Extra inputs are not permitted"),
        ('[[rules]]\nstage = "mail"\ntimes = 0\ndrop = "fin"',
         "rules[0].times: Input should be greater than or equal to 1 (raise the value)"),
    ],
)
def test_bad_files_give_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as error:
        load_file(path)
    line = str(error.value)
    assert "\n" not in line
    assert line.startswith(f"{path}: ")
    assert message in line
    assert line.endswith(")")  # every message ends with how to fix it


def test_unknown_profile_names_the_nearest() -> None:
    with pytest.raises(UnknownProfileError) as error:
        load_profile("4.4.318-rst-after-mial")
    assert "4.4.318-rst-after-mail" in str(error.value)


def test_profile_from_data_uses_the_same_validator() -> None:
    with pytest.raises(ProfileError, match=r"^marker: rules\[0\]\.reply\.code"):
        profile_from_data({"rules": [{"stage": "rcpt", "reply": {"code": 999}}]}, "marker")


def test_every_catalog_profile_validates_and_has_about() -> None:
    profiles = catalog()
    assert len(profiles) >= 20
    for profile in profiles:
        assert profile.about is not None, profile.name
        assert profile.about.title, profile.name
        assert profile.about.relay_sees, profile.name


def test_scaled_profile_shortens_every_duration() -> None:
    profile = load_profile("4.4.7-greylist-time").scaled(0.01)
    assert profile.rules[0].when.within_seconds == pytest.approx(3.0)
    assert profile.idle_timeout_seconds == pytest.approx(3.0)
    stalled = load_profile("4.4.318-stall-then-close").scaled(0.01)
    assert stalled.rules[0].stall is not None
    assert stalled.rules[0].stall.seconds == pytest.approx(0.3)


def test_scaled_profile_scales_rate_windows_and_negated_durations() -> None:
    profile = profile_from_data({"rules": [{
        "stage": "mail", "reply": {"code": 451},
        "when": {"sessions": {"rate": "3/10m", "per": "client"},
                 "not": {"within_seconds": 300, "messages": {"rate": "1/1h", "per": "sender"}}},
    }]}, "test").scaled(0.01)
    when = profile.rules[0].when
    assert when.sessions is not None
    assert when.sessions.rate == "3/6.0s"
    assert when.not_ is not None
    assert when.not_.within_seconds == pytest.approx(3.0)
    assert when.not_.messages is not None
    assert when.not_.messages.rate == "1/36.0s"


def test_not_round_trips_through_dump_and_schema() -> None:
    profile = profile_from_data({"rules": [{"stage": "rcpt", "reply": {"code": 451},
                                            "when": {"not": {"helo": ["a*"]}}}]}, "test")
    dumped = profile.model_dump(exclude_none=True)
    assert dumped["rules"][0]["when"] == {"not": {"helo": ["a*"]}}
    assert profile_from_data(dumped, "again") == profile
    when_schema = Profile.model_json_schema()["$defs"]["When"]["properties"]
    assert "not" in when_schema
    assert "description" in when_schema["messages"]


# region lint (fakemx check) ----------------------------------------------------


def findings(data: dict[str, object]) -> list[str]:
    return [f.line("p.toml") for f in lint(profile_from_data(data, "p.toml"))]


REFUSE_MAIL = {"stage": "mail", "reply": {"code": 550, "text": "5.7.1 no"}}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"listener": "refuse", "rules": [REFUSE_MAIL]},
         'p.toml: rules[0]: never fires: with listener = "refuse" no connection reaches any'
         ' stage (remove the rule, or set listener = "open")'),
        ({"rules": [REFUSE_MAIL, {**REFUSE_MAIL, "when": {"helo": ["x"]}}]},
         "p.toml: rules[1]: never fires: rules[0] at stage mail has no condition and always"
         " fires first (move this rule above it, or give that rule a condition)"),
        ({"rules": [{"stage": "ehlo", "drop": "rst"}, {"stage": "rcpt", "drop": "fin"}]},
         "p.toml: rules[1]: never fires: rules[0] always ends the session at stage ehlo,"
         " before rcpt"),
        ({"rules": [{"stage": "greeting", "reply": {"code": 554}},
                    {"stage": "data", "drop": "fin"}]},
         "p.toml: rules[1]: never fires: rules[0] always refuses stage greeting"),
        ({"rules": [{"stage": "data", "drop": "fin"}, {"stage": "connect", "drop": "rst"}]},
         "rules[0]: never fires: rules[1] always ends the session at stage connect, before"
         " data"),  # wherever the earlier stage's rule is written
        ({"rules": [REFUSE_MAIL, {"stage": "data", "drop": "fin"}]},
         "rules[1]: never fires: rules[0] always refuses stage mail, so no client gets to data"),
        ({"tls": {"mode": "none"}, "rules": [{"stage": "starttls", "handshake": "alert"}]},
         'rules[0]: never fires: with tls.mode = "none" STARTTLS is not offered'),
        ({"rules": [{"stage": "data", "reply": {"code": 250, "text": "2.0.0 Ok"}}]},
         "p.toml: rules[0]: 250 to DATA: the client would send the message"),
        ({"rules": [{"stage": "rcpt", "reply": {"code": 354}}]},
         "rules[0]: 354 at stage rcpt: only DATA's 354 is an intermediate reply"),
        ({"rules": [{"stage": "starttls", "reply": {"code": 220}}]},
         "rules[0]: 220 to STARTTLS: the client would start TLS and fakemx would not"),
        ({"rules": [{"stage": "greeting", "reply": {"code": 250}}]},
         "rules[0]: 250 greeting: a server greets with 220"),
        ({"rules": [{"stage": "connect", "reply": {"code": 421}}]},
         "rules[0]: a reply at stage connect is never sent unless it closes"),
        ({"rules": [{"stage": "connect", "when": {"messages": {"above": 1, "per": "session"}},
                     "drop": "rst"}]},
         "p.toml: rules[0]: messages per session at stage connect: the session has had no MAIL"
         " FROM yet, so the count is always 0 (move the rule to a later stage, or count per"
         " client)"),
        ({"rules": [{"stage": "mail", "when": {"not": {"recipients": {
            "above": 1, "per": "message"}}}, "drop": "rst"}]},
         "rules[0]: recipients per message at stage mail: this message has had no RCPT TO yet"),
        ({"rules": [{"stage": "ehlo", "when": {"messages": {"rate": "1/1s", "per": "sender"}},
                     "drop": "rst"}]},
         "rules[0]: messages per sender at stage ehlo: no MAIL FROM has named the sender yet"),
        ({"rules": [{"stage": "body", "after": 2, "drop": "fin"}]},
         "rules[0]: after at stage body counts every block of every message read"),
    ],
)
def test_lint_finds_what_cannot_work(data: dict[str, object], expected: str) -> None:
    lines = findings(data)
    assert any(expected in line for line in lines), lines


@pytest.mark.parametrize("data", [
    # conditions, times and after keep later rules reachable
    {"rules": [{**REFUSE_MAIL, "times": 2}, {**REFUSE_MAIL, "when": {"helo": ["x"]}}]},
    {"rules": [{**REFUSE_MAIL, "when": {"probability": 0.5}}, {"stage": "rcpt", "drop": "fin"}]},
    # a client can skip STARTTLS, and can QUIT before EHLO
    {"rules": [{"stage": "starttls", "handshake": "rst"}, {"stage": "mail", "drop": "fin"}]},
    {"rules": [{"stage": "ehlo", "drop": "fin"}, {"stage": "quit", "drop": "rst"}]},
    # a refused greeting still serves QUIT
    {"rules": [{"stage": "greeting", "reply": {"code": 554}}, {"stage": "quit", "drop": "rst"}]},
    {"rules": [{"stage": "data", "reply": {"code": 451}}, {"stage": "rcpt", "reply": {"code": 251}},
               {"stage": "connect", "when": {"client_ip": ["192.0.2.0/24"]},
                "reply": {"code": 421, "close": True}}]},
    {"rules": [{"stage": "rcpt", "when": {"recipients": {"above": 2, "per": "message"}},
                "reply": {"code": 452}},
               {"stage": "greeting", "when": {"sessions": {"rate": "9/1m", "per": "client"}},
                "reply": {"code": 421, "close": True}}]},
])
def test_lint_leaves_working_rules_alone(data: dict[str, object]) -> None:
    assert findings(data) == []


def test_every_catalog_profile_lints_clean() -> None:
    for profile in catalog():
        assert lint(profile) == [], profile.name


def test_check_prints_one_line_per_finding_and_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, '[[rules]]\nstage = "mail"\ndrop = "fin"\n'
                           '[[rules]]\nstage = "mail"\nreply = { code = 451 }\n'
                           '[[rules]]\nstage = "data"\nreply = { code = 250 }\n')
    assert main(["check", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}: rules[1]: never fires: rules[0] at stage mail")
    assert lines[1].startswith(f"{path}: rules[2]: never fires: rules[0] always ends the")
    good = write(tmp_path, '[[rules]]\nstage = "mail"\nwhen = { messages = { above = 3,'
                           ' per = "client" } }\nreply = { code = 452 }\n')
    assert main(["check", str(good)]) == 0
