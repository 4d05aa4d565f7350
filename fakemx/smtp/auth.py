"""SMTP AUTH (RFC 4954) on aiosmtpd's own mechanism hooks, with the ``auth`` stage.

aiosmtpd runs the AUTH command: ``smtp_AUTH`` picks the mechanism's
``auth_<NAME>`` method, which reads the credentials (answering ``334``
challenges as needed) and returns an ``AuthResult``; aiosmtpd then answers
``235 2.7.0``, ``535 5.7.8`` or the result's own message. Here fakemx:

- offers AUTH only as the profile's ``[auth]`` says (``smtp_AUTH``: ``503``
  without it, ``538 5.7.11`` before TLS when ``require_tls``) and requires it
  before MAIL when ``required`` (``check_auth_needed``, aiosmtpd's hook);
- checks a login against ``[auth].users`` (``check_login``, aiosmtpd's
  ``authenticator``) and adds CRAM-MD5 (RFC 2195), which aiosmtpd lacks;
- runs the ``auth`` stage once the credentials are in, so a rule's reply,
  drop or stall takes the place of the verdict (a 2xx reply logs the client in);
- journals what the client sent during AUTH as ``********``: a password never
  reaches the journal, the store or a log. The login name is journaled.
"""

from __future__ import annotations

import binascii
import hmac
import secrets
import time
from base64 import b64decode, b64encode
from typing import Any

from aiosmtpd.smtp import MISSING, AuthResult, LoginPassword, syntax

from fakemx.authconfig import MECHANISMS, Auth
from fakemx.clientbytes import CREDENTIALS_MASK as MASK
from fakemx.clientbytes import from_bytes
from fakemx.smtp.core import SessionCore
from fakemx.stages import Stage

# What a Postfix without SASL answers (smtpd_sasl_auth_enable = no).
NOT_ENABLED = "503 5.5.1 Error: authentication not enabled"
# RFC 4954 6, the reply texts the RFC gives.
ENCRYPTION_REQUIRED = "538 5.7.11 Encryption required for requested authentication mechanism"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
# RFC 4954 4: AUTH inside a mail transaction (Postfix's words).
IN_TRANSACTION = "503 5.5.1 Error: MAIL transaction in progress"
# RFC 4954 4: an answer longer than the server accepts.
LINE_TOO_LONG = "500 5.5.6 Authentication Exchange line is too long"


def check_login(server: Authentication, session: Any, envelope: Any, mechanism: str,
                data: Any) -> AuthResult:
    """aiosmtpd's ``authenticator`` (PLAIN, LOGIN): are login and password in ``[auth].users``?

    The result carries the login (as text) even when wrong, for the journal.
    """
    assert isinstance(data, LoginPassword)
    login = from_bytes(data.login)
    expected = server.password_of(login)
    right = expected is not None and hmac.compare_digest(expected, data.password)
    return AuthResult(success=right, handled=False, auth_data=login)


def cram_md5_digest(password: bytes, challenge: bytes) -> bytes:
    """RFC 2195 2: the keyed MD5 of the challenge, in lowercase hex."""
    return hmac.new(password, challenge, "md5").hexdigest().encode()


class Authentication(SessionCore):
    """The AUTH command, its mechanisms and the ``auth`` stage (a FakeSMTP part)."""

    # LOGIN's challenges as Postfix (Cyrus SASL) and Exchange send them; aiosmtpd's
    # own are "User Name\x00" and "Password\x00".
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"

    def auth_options(self) -> dict[str, Any]:
        # TLS is checked here (aiosmtpd's own check misses implicit TLS); aiosmtpd
        # offers every auth_* method not excluded, and checks logins with check_login.
        offered = self.profile.auth.mechanisms if self.profile.auth else []
        return {
            "auth_require_tls": False,
            "auth_exclude_mechanism": [m for m in MECHANISMS if m not in offered],
            "authenticator": check_login,
        }

    @property
    def encrypted(self) -> bool:
        """Is the session under TLS, after STARTTLS or from the first byte (SMTPS)?"""
        transport = self.transport
        return self.tls_active or (
            transport is not None and transport.get_extra_info("ssl_object") is not None)

    def auth_keyword(self) -> str | None:
        """The EHLO keyword ``AUTH <mechanisms>`` if AUTH is offered now, else None."""
        auth = self.profile.auth
        if auth is None or (auth.require_tls and not auth.advertise_before_tls
                            and not self.encrypted):
            return None
        return "AUTH " + " ".join(auth.mechanisms)

    def password_of(self, login: str) -> bytes | None:
        auth: Auth | None = self.profile.auth
        password = None if auth is None else auth.users.get(login)
        return None if password is None else password.encode()

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        if await self.check_helo_needed("EHLO"):
            return
        self._reach(Stage.AUTH)  # a client that leaves mid-exchange left during AUTH
        auth = self.profile.auth
        if auth is None:
            await self.push(NOT_ENABLED)
            return
        if auth.require_tls and not self.encrypted:
            await self.push(ENCRYPTION_REQUIRED)
            return
        if self.envelope is not None and self.envelope.mail_from is not None:
            await self.push(IN_TRANSACTION)  # RFC 4954 4: MUST be rejected with a 503
            return
        await super().smtp_AUTH(arg)

    async def check_auth_needed(self, caller_method: str) -> bool:
        """aiosmtpd asks before MAIL, RCPT, DATA (and HELP, VRFY): 530 until logged in."""
        auth = self.profile.auth
        if auth is None or not auth.required or self.authenticated:
            return False
        await self.push(AUTH_REQUIRED)
        return True

    async def challenge_auth(self, challenge: str | bytes, encode_to_b64: bool = True,
                             log_client_response: bool = False) -> Any:
        """aiosmtpd's ``334`` challenge and the client's answer, journaled masked.

        aiosmtpd's own reads the answer past the journal; this one notes it (as
        ``********``) before any reply to it, and answers a line over the limit
        with ``500 5.5.6`` instead of failing inside the server.
        """
        raw = challenge.encode() if isinstance(challenge, str) else challenge
        await self.push("334 " + (b64encode(raw) if encode_to_b64 else raw).decode("ascii"))
        try:
            line = await self.reader.readline()
        except ValueError:  # longer than the reader's line limit
            self._client_said(MASK)
            await self.push(LINE_TOO_LONG)
            return MISSING
        self._client_said(MASK)
        blob = line.strip()
        if blob == b"*":  # RFC 4954 4: the client cancels
            await self.push("501 5.7.0 Auth aborted")
            return MISSING
        try:
            return b64decode(blob, validate=True)
        except binascii.Error:
            await self.push("501 5.5.2 Can't decode base64")
            return MISSING

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verdict("PLAIN", await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verdict("LOGIN", await super().auth_LOGIN(_, args))

    async def auth_CRAM__MD5(self, _: Any, args: list[str]) -> AuthResult:
        """CRAM-MD5 (RFC 2195): a unique challenge, answered with ``login SP hex-digest``."""
        if len(args) > 1:
            await self.push("501 5.5.2 CRAM-MD5 takes no initial response")
            return AuthResult(success=False, handled=True)
        challenge = f"<{secrets.randbits(64)}.{int(time.time())}@{self.hostname}>".encode()
        answer = await self.challenge_auth(challenge)
        if answer is MISSING:
            return AuthResult(success=False, handled=True)
        login, _space, digest = bytes(answer).rpartition(b" ")
        password = self.password_of(from_bytes(login))
        right = password is not None and hmac.compare_digest(
            cram_md5_digest(password, challenge), digest.lower())
        result = AuthResult(success=right, handled=False, auth_data=from_bytes(login))
        return await self._verdict("CRAM-MD5", result)

    async def _verdict(self, mechanism: str, result: AuthResult) -> AuthResult:
        """The ``auth`` stage: the credentials are in; a rule may answer instead."""
        if result.auth_data is None:  # no credentials came (a cancel, bad base64): answered
            return result
        login = str(result.auth_data)
        verdict = "login and password right" if result.success else "wrong login or password"
        self._note(f"AUTH {mechanism} as {login}: {verdict}")
        rule = self._decide(Stage.AUTH, mechanism=mechanism, login=login)
        reply = await self._act(Stage.AUTH, rule)
        if reply is None:  # aiosmtpd: 235 2.7.0 Authentication successful, or 535 5.7.8
            return result
        if reply.startswith("2"):
            return AuthResult(success=True, message=reply, auth_data=login)
        return AuthResult(success=False, handled=False, message=reply)

    def _client_said(self, text: str) -> None:
        if self.record is not None:
            self.record.add("client", text)
