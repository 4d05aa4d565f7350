"""fakemx: a fake destination mail server that fails on purpose.

Names are imported on first use (PEP 562): the pytest plugin, registered for
every pytest run in an environment with fakemx installed, imports
``fakemx.pytest_plugin`` and so this package, and must not pay for aiosmtpd
and pydantic (about 300 ms) in runs that never use a fixture.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fakemx.control import UnknownRuleError
    from fakemx.errors import FakeMXError, ListenError, ProfileError, UnknownProfileError
    from fakemx.extensions import Extensions
    from fakemx.incidents import Incident, ServerSideError
    from fakemx.journal import Event, Outcome, Session, StoredMessage
    from fakemx.model import (
        About,
        EximVerdict,
        PostfixVerdict,
        Profile,
        Reply,
        Rule,
        Stall,
        Then,
        Tls,
        When,
    )
    from fakemx.profiles import catalog, load_profile, profile_from_data
    from fakemx.server import FakeMX
    from fakemx.stages import ListenerState, Protocol, Stage, TlsMode

__version__ = "0.1.0"

_WHERE = {
    "About": "model",
    "Break": "timeline",
    "BreakKind": "timeline",
    "Event": "journal",
    "EximVerdict": "model",
    "Extensions": "extensions",
    "FakeMX": "server",
    "FakeMXError": "errors",
    "Incident": "incidents",
    "ListenError": "errors",
    "ListenerState": "stages",
    "Outcome": "journal",
    "PostfixVerdict": "model",
    "Profile": "model",
    "ProfileError": "errors",
    "Protocol": "stages",
    "Reply": "model",
    "Rule": "model",
    "ServerSideError": "incidents",
    "Session": "journal",
    "Stage": "stages",
    "Stall": "model",
    "StoredMessage": "journal",
    "Then": "model",
    "Tls": "model",
    "TlsMode": "stages",
    "UnknownProfileError": "errors",
    "UnknownRuleError": "control",
    "When": "model",
    "catalog": "profiles",
    "load_profile": "profiles",
    "profile_from_data": "profiles",
}

__all__ = [
    "About",
    "Break",
    "BreakKind",
    "Event",
    "EximVerdict",
    "Extensions",
    "FakeMX",
    "FakeMXError",
    "Incident",
    "ListenError",
    "ListenerState",
    "Outcome",
    "PostfixVerdict",
    "Profile",
    "ProfileError",
    "Protocol",
    "Reply",
    "Rule",
    "ServerSideError",
    "Session",
    "Stage",
    "Stall",
    "StoredMessage",
    "Then",
    "Tls",
    "TlsMode",
    "UnknownProfileError",
    "UnknownRuleError",
    "When",
    "__version__",
    "catalog",
    "load_profile",
    "profile_from_data",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fakemx' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fakemx.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
