"""fakemx's pytest plugin: fixtures, a marker, and a helper to run a test over the catalog.

Registered through the ``pytest11`` entry point, so it loads in every pytest
run of an environment where fakemx is installed. It therefore imports nothing
of fakemx's own at module level (aiosmtpd and pydantic cost about 300 ms);
the first fixture that is used pays for them.

Fixtures (override any of them in a conftest.py, as with pytest-httpserver):

- ``fakemx``: a running FakeMX for one test (a fresh default sink, or what the
  ``@pytest.mark.fakemx(...)`` marker or an indirect parameter names).
- ``fakemx_factory``: start more servers, e.g. one per MX host of a domain.
- ``fakemx_listen_host``: the address servers listen on (``127.0.0.1``).
- ``fakemx_state_dir``: the test's state directory (messages, journal, CA).
- ``fakemx_ca``: the CA certificate every server of the session (of the xdist
  worker) presents a certificate from; give it to the relay under test.
- ``fakemx_time_scale``: multiplies every duration of the profiles (1.0).

When a test that used ``fakemx`` or ``fakemx_factory`` fails, its report gets
a "fakemx" section (and its JUnit XML record a "fakemx" property): each
server's sessions as the lab page shows them, with the point each one broke,
the messages stored and any server-side error. ``-vv`` shows it complete,
``--fakemx-report=no`` turns it off.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Generator, Iterable, Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import pytest

if TYPE_CHECKING:
    from fakemx.control import RuleSpec
    from fakemx.model import Profile
    from fakemx.server import FakeMX, ProfileSpec

MARKER = "fakemx"
_MARKER_HELP = (
    "fakemx(profile=None, rules=(), time_scale=None, **profile_fields): the profile the "
    "`fakemx` fixture runs; rules are checked first; validated like a profile file"
)


# The servers a test started (fakemx_factory records them), for its failure report.
_SERVERS = pytest.StashKey[list["FakeMX"]]()
_REPORTED = pytest.StashKey[bool]()
# A failing client has usually just been dropped or has given up: give the server's
# thread this long to close its side of the session, so the report shows the end.
_SETTLE_SECONDS = 1.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fakemx")
    group.addoption(
        "--fakemx-report",
        choices=("on-failure", "no"),
        default="on-failure",
        dest="fakemx_report",
        help="on a failing test, report what its fakemx servers saw (default: on-failure; "
        "-vv shows it complete)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add what fakemx saw to the first failing report of a test that used a server."""
    report = yield
    servers = item.stash.get(_SERVERS, None)
    if (
        report.failed
        and servers
        and item.config.getoption("fakemx_report") != "no"
        and not item.stash.get(_REPORTED, False)
    ):
        item.stash[_REPORTED] = True  # once: a failed call is often followed by teardown errors
        text = _report_text(servers, full=item.config.getoption("verbose") >= 2)
        report.sections.append(("fakemx", text))
        # JUnit XML takes its properties from the teardown report, which copies these.
        item.user_properties.append(("fakemx", text))
        report.user_properties.append(("fakemx", text))
    return report


def _report_text(servers: list[FakeMX], *, full: bool) -> str:
    try:
        from fakemx.timeline import server_text

        for mx in servers:
            mx.journal.wait_for(ended=len(mx.sessions), timeout=_SETTLE_SECONDS)
        return "\n\n".join(server_text(mx, full=full) for mx in servers)
    except Exception as exc:  # a broken report must not turn a test failure into an INTERNALERROR
        return f"fakemx could not write its report: {type(exc).__name__}: {exc}"


class FakeMXFactory(Protocol):
    """``fakemx_factory(profile=None, **FakeMX keyword arguments) -> FakeMX``, started."""

    def __call__(self, profile: ProfileSpec = None, /, **options: Any) -> FakeMX: ...


# region override fixtures ------------------------------------------------------


@pytest.fixture(scope="session")
def fakemx_listen_host() -> str:
    """The address fakemx servers listen on; the port is always picked free (port 0)."""
    return "127.0.0.1"


@pytest.fixture(scope="session")
def fakemx_time_scale() -> float:
    """Multiplies every duration in the profiles (stalls, greylist windows, idle timeout)."""
    return 1.0


@pytest.fixture(scope="session")
def fakemx_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA certificate (PEM file) behind every fakemx certificate of this session.

    Made once per session (per xdist worker) and copied into each server's state
    directory, so no test pays for key generation and a relay configured once
    trusts every server. Beside it: the cached server certificate and an empty
    store, copied the same way.
    """
    from fakemx.store import Store
    from fakemx.tls import certs

    ca_dir = tmp_path_factory.mktemp("fakemx-ca")
    certs.load_or_create_ca(ca_dir)
    certs.valid_cert_files(ca_dir, certs.DEFAULT_HOSTNAME)  # also cache the usual leaf
    # An empty store to copy: creating one costs ~18 ms of fsyncs, copying ~1 ms.
    Store(ca_dir).close()
    return ca_dir / certs.CA_FILE


@pytest.fixture
def fakemx_state_dir(tmp_path: Path) -> Path:
    """This test's state directory; each server gets a subdirectory with the session's CA."""
    return tmp_path / "fakemx"


# endregion
# region server fixtures --------------------------------------------------------


@pytest.fixture
def fakemx_factory(
    request: pytest.FixtureRequest,
    fakemx_listen_host: str,
    fakemx_state_dir: Path,
    fakemx_time_scale: float,
    fakemx_ca: Path,
) -> Iterator[FakeMXFactory]:
    """Start FakeMX servers in background threads; all stop at teardown.

    Each gets its own state subdirectory with the session's CA. At teardown,
    an exception inside any of them fails the test (``FakeMX.check()``). A
    profile that does not load, or a port that cannot be bound, fails the test
    with one line (e.g. the nearest profile names), not a traceback.
    """
    from fakemx.errors import FakeMXError
    from fakemx.server import FakeMX

    started: list[FakeMX] = []
    request.node.stash[_SERVERS] = started

    def start(profile: ProfileSpec = None, /, **options: Any) -> FakeMX:
        options.setdefault("host", fakemx_listen_host)
        options.setdefault("time_scale", fakemx_time_scale)
        if "state_dir" not in options:
            state_dir = fakemx_state_dir / str(len(started))
            _seed_state_dir(fakemx_ca.parent, state_dir)
            options["state_dir"] = state_dir
        try:
            mx = FakeMX(profile, **options).__enter__()
        except FakeMXError as exc:
            _fail_in_one_line(f"fakemx_factory: {exc}")
        started.append(mx)
        return mx

    yield start
    _stop_all(started)


@pytest.fixture
def fakemx(request: pytest.FixtureRequest, fakemx_factory: FakeMXFactory) -> FakeMX:
    """A running FakeMX for this test, in a background thread (smtplib and asyncio alike).

    The default sink, unless ``@pytest.mark.fakemx(profile=..., rules=[...])``
    or an indirect parameter (``catalog_params``) names a profile. A relative
    profile path there (one with a ``/`` or ending ``.toml``) is relative to the
    test file's directory, so the suite runs the same from any directory.
    """
    from fakemx.errors import FakeMXError

    param = getattr(request, "param", None)
    marker = request.node.get_closest_marker(MARKER)
    where = f"@pytest.mark.fakemx on {request.node.nodeid}: "
    try:
        profile, time_scale = _marked_profile(
            param, marker, request.node.nodeid, request.node.path.parent
        )
    except FakeMXError as exc:
        _fail_in_one_line(str(exc) if str(exc).startswith(where) else where + str(exc))
    options: dict[str, Any] = {} if time_scale is None else {"time_scale": time_scale}
    return fakemx_factory(profile, **options)


def _fail_in_one_line(message: str) -> NoReturn:
    """Fail the test with ``message`` alone: a FakeMXError's one line is the whole story.

    Called from an ``except`` block, where pytest would also print the
    FakeMXError it handles ("During handling of the above exception..."):
    ``from None`` drops that.
    """
    __tracebackhide__ = True
    try:
        pytest.fail(message, pytrace=False)
    except pytest.fail.Exception as failed:
        raise failed from None


def _marked_profile(
    param: ProfileSpec, marker: pytest.Mark | None, nodeid: str, test_dir: Path
) -> tuple[Profile, float | None]:
    """The profile to run: an indirect parameter, else the marker's, else the sink;
    the marker's rules and profile fields go on top, validated as one profile.

    Loaded here, not by FakeMX, so that a bad name or file is a FakeMXError the
    fixture turns into one line.
    """
    from fakemx.control import profile_with_overrides
    from fakemx.profiles import load_profile

    if marker is None:
        return load_profile(_beside(param, test_dir)), None
    fields = dict(marker.kwargs)
    named = fields.pop("profile", marker.args[0] if marker.args else None)
    base = load_profile(_beside(param if param is not None else named, test_dir))
    rules: list[RuleSpec] = list(fields.pop("rules", ()))
    time_scale = fields.pop("time_scale", None)
    if not fields and not rules:
        return base, time_scale
    source = f"@pytest.mark.fakemx on {nodeid}"
    return profile_with_overrides(base, fields, rules, source), time_scale


def _beside(spec: ProfileSpec, test_dir: Path) -> ProfileSpec:
    """A relative profile path, taken from the test file's directory.

    Not from the working directory: the same suite must pass when pytest runs
    from another folder. What looks like a path is what the issue (#22) and
    the guide say: it has a ``/`` (or the OS separator) or ends in ``.toml``;
    anything else is a catalog name.
    """
    if not isinstance(spec, str | os.PathLike):
        return spec
    text = os.fspath(spec)
    if ("/" in text or os.sep in text or text.endswith(".toml")) and not Path(text).is_absolute():
        return test_dir / text
    return spec


def _stop_all(servers: list[FakeMX]) -> None:
    """Stop every server, then raise the first failure: a stop error or a server-side error."""
    failures: list[BaseException] = []
    for mx in reversed(servers):
        try:
            mx.__exit__(None, None, None)
        except Exception as exc:
            failures.append(exc)
    for mx in servers:
        try:
            mx.check()
        except Exception as exc:
            failures.append(exc)
    if failures:
        raise failures[0]


def _seed_state_dir(source: Path, state_dir: Path) -> None:
    """Give ``state_dir`` the CA, cached certificates and empty store of ``source``.

    File copies only: no key generation, no fsyncs. A state directory that
    already has a CA or a store keeps it.
    """
    from fakemx.store import DB_NAME, ensure_state_dir
    from fakemx.tls import certs

    ensure_state_dir(state_dir)
    if not (state_dir / DB_NAME).exists():
        shutil.copy2(source / DB_NAME, state_dir / DB_NAME)
    if (state_dir / certs.CA_FILE).exists():
        return
    for name in (certs.CA_FILE, certs.CA_KEY_FILE):
        shutil.copy2(source / name, state_dir / name)
    if (source / "certs").is_dir():
        shutil.copytree(source / "certs", state_dir / "certs", dirs_exist_ok=True)


# endregion
# region parametrizing over the catalog ----------------------------------------


def catalog_params(
    *,
    code: str | Iterable[str] | None = None,
    names: str | Iterable[str] = "*",
    exclude: str | Iterable[str] = (),
    where: Callable[[Profile], bool] | None = None,
) -> list[Any]:
    """Catalog profiles as ``pytest.param``\\s with the profile names as test ids.

    Args:
        code: keep profiles whose ``about.code`` matches (a glob: ``"4.4.318"``,
            ``"5.*"``), or any of several.
        names: keep profiles whose name matches this glob (or any of several).
        exclude: drop profiles whose name matches this glob (or any of several).
        where: keep profiles for which this returns True.

    Use as ``@pytest.mark.parametrize("profile", catalog_params(code="4.4.318"))``,
    or ``@pytest.mark.parametrize("fakemx", catalog_params(...), indirect=True)``
    to have the ``fakemx`` fixture run each profile. An empty selection is an
    error, so a typo cannot turn into a test that silently runs nothing.
    """
    from fakemx.profiles import catalog

    codes = _globs(code) if code is not None else None
    keep, drop = _globs(names), _globs(exclude)
    chosen = [
        profile
        for profile in catalog()
        if _matches(profile.name, keep)
        and not _matches(profile.name, drop)
        and (codes is None or (profile.about is not None and _matches(profile.about.code, codes)))
        and (where is None or where(profile))
    ]
    if not chosen:
        raise ValueError(
            f"catalog_params(code={code!r}, names={names!r}, exclude={exclude!r}) "
            "selects no profile; `fakemx list` shows the catalog"
        )
    return [pytest.param(profile, id=profile.name) for profile in chosen]


def _globs(patterns: str | Iterable[str]) -> tuple[str, ...]:
    return (patterns,) if isinstance(patterns, str) else tuple(patterns)


def _matches(value: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(value, pattern) for pattern in patterns)


# endregion
