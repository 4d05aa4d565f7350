from __future__ import annotations

import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fakemx import FakeMX

if TYPE_CHECKING:
    from container_engine import Engine


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[pytest.TestReport]:
    """Report a failure even on a Python with CPython's gh-106905 (fixed in 3.11.8; Debian
    12's is 3.11.2), where ``ast.parse`` of a test file, which pytest runs to show a
    failure's source, can raise ``SystemError: AST constructor recursion depth
    mismatch``: pytest-xdist then stops with INTERNALERROR and no results. The failure
    is then reported without its source lines: each frame's file, line and function."""
    try:
        return (yield)
    except Exception as error:  # the SystemError, or a plugin's warning that wraps it
        if "AST constructor recursion depth mismatch" not in str(error) \
                or call.excinfo is None:
            raise
        frames = traceback.extract_tb(call.excinfo.tb)
        where = "\n".join(f"{f.filename}:{f.lineno}: in {f.name}" for f in frames)
        return pytest.TestReport(
            item.nodeid, item.location, dict.fromkeys(item.keywords, 1), "failed",
            f"{where}\n{call.excinfo.exconly()}\n(source not shown: CPython gh-106905)",
            call.when, duration=call.duration, start=call.start, stop=call.stop)


@pytest.fixture
def sink() -> Iterator[FakeMX]:
    """A healthy default sink in a background thread: the positive control."""
    with FakeMX() as mx:
        yield mx


@pytest.fixture
def control(sink: FakeMX) -> None:
    """Positive control: the same raw client completes a transaction on a healthy server.

    Proves that a failure seen next comes from the profile, not from the client.
    """
    from wire import dialogue

    transcript = dialogue(sink.host, sink.port)
    assert transcript.ended_at is None, transcript
    assert transcript.code("body") == 250
    assert transcript.code("quit") == 221
    sink.wait_for(messages=1)


# region the container tests (tests/test_container*.py) ----------------------------------


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """podman serving Docker's API on a socket of this run (tests/container_engine.py)."""
    from container_engine import podman_service

    with podman_service(tmp_path_factory.mktemp("engine")) as running:
        yield running


@pytest.fixture(scope="session")
def image(engine: Engine) -> str:
    """This checkout's Dockerfile built with BASE = the local Debian image; its tag."""
    from container_engine import build_image, ensure_base_image, image_tag, wheelhouse

    ensure_base_image()
    wheels = wheelhouse(Path.home() / ".cache" / "fakemx-tests" / "wheelhouse")
    tag = image_tag()
    build_image(engine, tag, wheels)
    return tag


@pytest.fixture
def testcontainers_env(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """testcontainers-python talks to the engine through DOCKER_HOST, as to Docker's.
    Its reaper (Ryuk) is an image from Docker Hub, which cannot be pulled here: off,
    as TESTCONTAINERS_RYUK_DISABLED=true does (each container is removed by its `with`).
    This machine has a /.dockerenv without being a container, which makes testcontainers
    look for a Docker network of its own: TESTCONTAINERS_CONNECTION_MODE=docker_host."""
    from testcontainers.core.config import ConnectionMode, testcontainers_config

    monkeypatch.setenv("DOCKER_HOST", engine.env["DOCKER_HOST"])
    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    monkeypatch.setattr(testcontainers_config, "connection_mode_override",
                        ConnectionMode.docker_host)
