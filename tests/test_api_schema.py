"""schemathesis against the published OpenAPI document: no input makes fakemx answer 5xx,
and every answer matches the document (status codes, content types, bodies).

Bounded and derandomized (the same examples every run), so it stays fast in CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from api_harness import Running, running_api
from hypothesis import HealthCheck, settings

MAX_EXAMPLES = 5


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running_api(tmp_path_factory.mktemp("schema")) as api:
        yield api


@pytest.fixture(scope="module")
def api_schema(running: Running) -> Any:
    return schemathesis.openapi.from_url(f"{running.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_and_never_fails(case: schemathesis.Case, running: Running) -> None:
    case.call_and_validate(base_url=running.url, timeout=5)
