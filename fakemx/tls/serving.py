"""What a running server needs for TLS: the context a profile asks for, and the CRL/OCSP
responder of the ``revoked`` certificate, started on first need."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fakemx.model import CertKind, Profile
from fakemx.stages import TlsMode
from fakemx.tls import certs, contexts

if TYPE_CHECKING:  # cryptography's OCSP code costs start-up time: imported when needed
    from cryptography import x509

    from fakemx.tls.revocation import RevocationServer


class TlsServing:
    def __init__(self, state_dir: Callable[[], Path], hostname: str) -> None:
        self._state_dir = state_dir  # FakeMX's, made on first use
        self._hostname = hostname
        self.revocation: RevocationServer | None = None  # CRL + OCSP, for `revoked`

    async def context_for(self, profile: Profile) -> ssl.SSLContext | None:
        tls = profile.tls
        if tls.mode is TlsMode.NONE:
            return None
        state_dir = self._state_dir()
        if tls.cert is not CertKind.REVOKED:
            return contexts.server_context(state_dir, self._hostname, tls)
        revocation = await self._revocation_server(state_dir)
        context = contexts.server_context(state_dir, self._hostname, tls,
                                          revocation_base_url=revocation.base_url)
        files = certs.cert_files(state_dir, self._hostname, CertKind.REVOKED,
                                 revocation_base_url=revocation.base_url)
        revocation.revoke(files.leaf)
        return context

    def state_dir(self) -> Path:
        return self._state_dir()

    def presented(self, profile: Profile) -> x509.Certificate:
        """The leaf certificate ``profile`` presents (what its TLSA records describe)."""
        revocation = self.revocation.base_url if self.revocation is not None else None
        if profile.tls.cert is CertKind.REVOKED and revocation is None:
            raise ValueError("the revoked certificate is made when its profile's TLS starts")
        return certs.cert_files(self._state_dir(), self._hostname, profile.tls.cert,
                                revocation_base_url=revocation).leaf

    async def _revocation_server(self, state_dir: Path) -> RevocationServer:
        """fakemx's CRL and OCSP responder on loopback, started when a profile needs it."""
        if self.revocation is None:
            from fakemx.tls.recipes import Signer
            from fakemx.tls.revocation import RevocationServer

            revocation = RevocationServer(Signer.root(state_dir), state_dir)
            await revocation.start()
            self.revocation = revocation
        return self.revocation

    async def stop(self) -> None:
        if self.revocation is not None:
            await self.revocation.stop()
            self.revocation = None
