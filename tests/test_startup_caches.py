"""The start-up caches of `fakemx check` and `fakemx serve` (fakemx.check_cache,
fakemx.profile_cache): the same output as without them, never stale, and no cache
directory only means working without one. Real processes, as a CLI user runs them.
"""

from __future__ import annotations

import json
import os
import pickle
import smtplib
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from processes import clean_env, process

from fakemx import profile_cache, startcache
from fakemx.extensions import Extensions
from fakemx.model import Limits, Tls, When
from fakemx.profiles import load_file

ROOT = Path(__file__).resolve().parent.parent

GOOD = '[[rules]]\nstage = "rcpt"\nreply = { code = 450 }\n'
# The same size as GOOD: an edit that keeps size and modification time is still seen.
BAD = '[[rules]]\nstage = "rcpt"\nreply = { code = 650 }\n'
LINTED = '[[rules]]\nstage = "mail"\ndrop = "fin"\n[[rules]]\nstage = "mail"\naccept = true\n'


def fakemx(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FAKEMX_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "fakemx", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def outputs(result: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    return result.returncode, result.stdout, result.stderr


def test_check_from_the_cache_says_what_checking_says(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    files = {name: tmp_path / f"{name}.toml" for name in ("good", "bad", "linted")}
    for name, text in (("good", GOOD), ("bad", BAD), ("linted", LINTED)):
        files[name].write_text(text)
    args = ["check", *map(str, files.values()), str(tmp_path / "missing.toml")]
    first = outputs(fakemx(*args, cache=cache))
    assert len(list(cache.glob("check-*.json"))) == 1
    assert outputs(fakemx(*args, cache=cache)) == first  # read from it
    assert outputs(fakemx(*args, cache=tmp_path / "other")) == first  # checked for real
    code, out, err = first
    assert code == 2
    assert out == f"{files['good']}: ok (1 rules, listener open)\n"
    assert f"{files['bad']}: rules[0].reply.code: 650 is not an SMTP reply code" in err
    assert f"{files['linted']}: rules[1]: never fires" in err
    assert f"{tmp_path / 'missing.toml'}: no such file" in err


def test_an_edit_is_checked_at_once_even_with_the_same_size_and_time(tmp_path: Path) -> None:
    cache, path = tmp_path / "cache", tmp_path / "mine.toml"
    path.write_text(GOOD)
    stat = path.stat()
    assert outputs(fakemx("check", str(path), cache=cache))[0] == 0
    path.write_text(BAD)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    code, out, err = outputs(fakemx("check", str(path), cache=cache))
    assert (code, out) == (2, "")
    assert "650 is not an SMTP reply code" in err
    path.write_text(GOOD)  # and back: the first outcome again
    assert outputs(fakemx("check", str(path), cache=cache))[:2] == (0, f"{path}: ok (1 rules,"
                                                                    " listener open)\n")


@pytest.mark.parametrize("model", [When, Tls, Limits, Extensions])
def test_defaults_made_without_validation_equal_validated_ones(model: type[When]) -> None:
    """Profile's defaults are made with model_construct (fakemx.strict): the same value."""
    made, validated = model.model_construct(), model()
    assert made == validated
    assert made.model_fields_set == validated.model_fields_set
    assert made.model_dump() == validated.model_dump()


# Two rules of the same size: an edit between them keeps size and modification time.
REFUSING = '[[rules]]\nstage = "rcpt"\nreply = {{ code = {code}, text = "{text}" }}\n'
UNKNOWN = REFUSING.format(code=550, text="5.1.1 No such user")
GREYLISTED = REFUSING.format(code=451, text="4.7.1 Try again...")


def rcpt_reply(cache: Path, profile: Path, state_dir: Path) -> tuple[int, bytes]:
    """Serve ``profile`` (cache ``cache``) and send a message: the RCPT's reply."""
    env = clean_env(FAKEMX_CACHE_DIR=str(cache))
    with process("serve", str(profile), "--port", "0", "--state-dir", str(state_dir),
                 env=env) as served:
        port = served.port("fakemx: serving")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.example")
            client.mail("sender@example.com")
            return client.rcpt("bob@example.com")


def test_serve_from_the_cache_serves_the_file_and_sees_an_edit_at_once(tmp_path: Path) -> None:
    cache, profile = tmp_path / "cache", tmp_path / "mine.toml"
    profile.write_text(UNKNOWN)
    stat = profile.stat()
    first = rcpt_reply(cache, profile, tmp_path / "state")  # validated, then pickled
    assert len(list(cache.glob("profile-*.pickle"))) == 1
    assert rcpt_reply(cache, profile, tmp_path / "state") == first == (
        550, b"5.1.1 No such user")
    profile.write_text(GREYLISTED)
    os.utime(profile, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert profile.stat().st_size == stat.st_size
    assert rcpt_reply(cache, profile, tmp_path / "state") == (451, b"4.7.1 Try again...")


def test_a_cached_profile_is_the_validated_one_and_builds_no_model(tmp_path: Path) -> None:
    profile = tmp_path / "mine.toml"
    profile.write_text(UNKNOWN + '[tls]\nmode = "implicit"\n[about]\ncode = "5.1.1"\n'
                                 'title = "t"\nrelay_sees = "550"\n')
    script = ("import sys; from fakemx import profile_cache; from fakemx.model import Profile;"
              " p = profile_cache.load_profile(sys.argv[1]);"
              " print(Profile.__pydantic_complete__, p.model_dump_json())")
    env = {**os.environ, "FAKEMX_CACHE_DIR": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", script, str(profile)], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=True).stdout
            for _ in range(2)]
    # The first run validated (and so built the models); the second only unpickled, and
    # model_dump_json built Profile afterwards, when asked.
    validated = load_file(profile).model_dump_json()
    assert runs == [f"True {validated}\n", f"False {validated}\n"]


def test_the_api_over_a_cached_profile_documents_and_serves_it(tmp_path: Path) -> None:
    """A cached profile built no model; the API builds them (its /openapi.json shows
    defaults that are models, which pydantic serializes only from built classes)."""
    profile = tmp_path / "mine.toml"
    profile.write_text(UNKNOWN)
    env = clean_env(FAKEMX_CACHE_DIR=str(tmp_path / "cache"))
    seen = []
    for _ in range(2):  # validated, then from the cache
        with process("serve", str(profile), "--port", "0", "--api", "0", "--state-dir",
                     str(tmp_path / "state"), env=env) as served:
            api = served.api()
            pages = []
            for page in ("/openapi.json", "/api/servers"):
                with urllib.request.urlopen(api + page, timeout=10) as response:
                    pages.append(response.read().decode())
            seen.append(pages)
    assert len(list((tmp_path / "cache").glob("profile-*.pickle"))) == 1
    (schema, servers), (cached_schema, cached_servers) = seen
    assert cached_schema == schema

    def without_port(page: str) -> list[dict[str, object]]:
        return [{key: value for key, value in server.items()
                 if key not in ("name", "address", "port")} for server in json.loads(page)]

    assert without_port(cached_servers) == without_port(servers)
    assert without_port(servers)[0]["profile"] == "mine"


def test_check_and_serve_without_a_usable_cache_directory_still_work(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    bad, profile = tmp_path / "bad.toml", tmp_path / "mine.toml"
    bad.write_text(BAD)
    profile.write_text(UNKNOWN)
    for _ in range(2):
        code, _, err = outputs(fakemx("check", str(bad), cache=not_a_directory))
        assert code == 2
        assert "650 is not an SMTP reply code" in err
        assert rcpt_reply(not_a_directory, profile, tmp_path / "state")[0] == 550
    assert not_a_directory.read_text() == ""


class _Planted:
    """Unpickled, it creates the file ``path``: what a planted cache file could run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.path), "w")


def test_a_cache_file_others_can_write_is_never_unpickled(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    cache, profile, ran = tmp_path / "cache", tmp_path / "mine.toml", tmp_path / "ran"
    profile.write_text(UNKNOWN)
    monkeypatch.setenv("FAKEMX_CACHE_DIR", str(cache))
    planted = profile_cache.cache_file(profile, profile.read_bytes())
    cache.mkdir()
    planted.write_bytes(pickle.dumps(_Planted(ran)))
    planted.chmod(0o666)
    assert rcpt_reply(cache, profile, tmp_path / "state")[0] == 550
    assert not ran.exists()


def test_a_cache_keeps_its_newest_files_and_none_of_another_key(tmp_path: Path) -> None:
    for age, name in enumerate(["old-a-1", "old-a-2", "new-a-1", "new-a-2", "new-a-3"]):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, ns=(age * 10**9, age * 10**9))
    startcache.write(tmp_path / "new-a-4", b"fresh", replaces="*-a-*", keep="new-", most=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new-a-2", "new-a-3", "new-a-4"]
    assert (tmp_path / "new-a-4").read_bytes() == b"fresh"
    assert (tmp_path / "new-a-4").stat().st_mode & 0o077 == 0  # the owner's alone
