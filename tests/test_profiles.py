"""Profile files: validation into one-line errors that name the file, the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakemx import ProfileError, UnknownProfileError, load_profile, profile_from_data
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
         " strip_extensions, mask_banner, handshake (found none)"),
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
