"""fakemx: a fake destination mail server that fails on purpose."""

from __future__ import annotations

from fakemx.errors import FakeMXError, ListenError, ProfileError, UnknownProfileError
from fakemx.journal import Event, Outcome, Session, StoredMessage
from fakemx.model import About, PostfixVerdict, Profile, Reply, Rule, Stall, Then, Tls, When
from fakemx.profiles import catalog, load_profile, profile_from_data
from fakemx.server import FakeMX
from fakemx.stages import ListenerState, Stage, TlsMode

__version__ = "0.1.0"

__all__ = [
    "About",
    "Event",
    "FakeMX",
    "FakeMXError",
    "ListenError",
    "ListenerState",
    "Outcome",
    "PostfixVerdict",
    "Profile",
    "ProfileError",
    "Reply",
    "Rule",
    "Session",
    "Stage",
    "Stall",
    "StoredMessage",
    "Then",
    "Tls",
    "TlsMode",
    "UnknownProfileError",
    "When",
    "__version__",
    "catalog",
    "load_profile",
    "profile_from_data",
]
