"""The limits that keep fakemx up under load, as pure decisions with their RFC replies."""

from __future__ import annotations

from fakemx.model import Limits

# RFC 5321 3.8 / 4.2.2: 421 is the reply that closes the channel; RFC 3463 for the
# enhanced codes (4.3.2 system not accepting messages, 4.7.0 security/policy).
TOO_MANY_SESSIONS = "421 4.3.2 Too many sessions, try again later"
TOO_MANY_FROM_CLIENT = "421 4.7.0 Too many sessions from {client_ip}, try again later"
TOO_MANY_COMMANDS = "421 4.7.0 Too many commands in one session, closing connection"
# Postfix's words for smtpd_recipient_limit; RFC 5321 4.5.3.1.10 names 452 for it.
TOO_MANY_RECIPIENTS = "452 4.5.3 Error: too many recipients"


def refusal(
    limits: Limits, open_sessions: int, from_client: int, client_ip: str, *, fds_left: bool = True
) -> str | None:
    """The 421 a new session gets instead of a greeting, or None when it may go on.

    ``open_sessions`` and ``from_client`` count the new session itself;
    ``fds_left`` is False when the process's descriptor budget is spent.
    """
    if not fds_left or (limits.sessions is not None and open_sessions > limits.sessions):
        return TOO_MANY_SESSIONS
    if limits.sessions_per_client is not None and from_client > limits.sessions_per_client:
        return TOO_MANY_FROM_CLIENT.format(client_ip=client_ip)
    return None


def too_many_recipients(limits: Limits, recipients_so_far: int) -> bool:
    most = limits.recipients_per_message
    return most is not None and recipients_so_far >= most
