"""``POST /api/servers/{name}/diagnose``: ``fakemx diagnose`` against one of the running
servers, for the lab page's "diagnose this server" button.

Only fakemx's own servers can be probed (by name, at their loopback address, and
through their own DNS zone when the profile has one): the API never becomes a
probe of other hosts. The probe blocks, so it runs in a worker thread while the
servers it probes keep answering on the loop. Its timeouts are short and fixed.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from fakemx.addresses import loopback_like
from fakemx.diagnose import Options, Report, Target, Timeouts, TlsPolicy, diagnose, render
from fakemx.server import FakeMX

# Each wait at most 2 s: a stalled profile answers the page within seconds.
API_TIMEOUTS = Timeouts(dns_seconds=2.0, connect_seconds=2.0, reply_seconds=2.0,
                        slow_seconds=1.0)


class DiagnoseRequest(BaseModel):
    """What to probe beyond the session's start; nothing is sent after RCPT TO."""

    model_config = ConfigDict(extra="forbid")
    rcpt: Annotated[str, Field(pattern=r"^[^\s<>@]+@[^\s<>@]+$", max_length=254)] | None = None
    tls: Literal["verify", "require", "dane", "none"] | None = None  # default: verify;
    # require behind a profile's own DNS, whose mail host is not the name in fakemx's
    # certificate; dane validates against the server's own trust anchor when it signs


class DiagnosisStep(BaseModel):
    name: str
    severity: str
    line: str
    finding: str | None


class DiagnosisAdvice(BaseModel):
    code: str
    condition: str
    profiles: list[str]


class DiagnosisVerdict(BaseModel):
    code: str
    title: str
    evidence: str
    healthy: bool
    causes: list[str]
    fixes: list[str]
    profiles: list[str]
    also: list[DiagnosisAdvice]
    conditions: list[DiagnosisAdvice]
    not_probed: list[str]


class Diagnosis(BaseModel):
    """The report: the steps, the verdict, and ``text`` as the command prints it."""

    server: str
    target: str
    steps: list[DiagnosisStep]
    verdict: DiagnosisVerdict
    text: str


def options_for(mx: FakeMX, request: DiagnoseRequest) -> Options:
    """Probe ``mx`` itself: at its address, or by its zone's mail domain through its DNS."""
    host = loopback_like(mx.host)
    zone = mx.profile.dns
    if mx.dns is not None and zone is not None:
        records = zone.records
        domain = next((r.name for r in records if r.type == "MX"),
                      records[0].name if records else zone.origin)
        anchor = mx.state_dir / "dnssec-anchor.ds"  # written when the zone is signed
        tls = TlsPolicy(request.tls or "require")
        return Options(Target(domain, mx.port, mx_lookup=True), tls=tls, ca_file=mx.ca_path,
                       resolver=(mx.dns.host, mx.dns.port), rcpt=request.rcpt,
                       helo="lab.fakemx.test", timeouts=API_TIMEOUTS,
                       trust_anchor=anchor if tls is TlsPolicy.DANE and anchor.exists() else None,
                       # the policy host fakemx runs beside the server, not 443
                       mta_sts_port=mx.mta_sts.port if mx.mta_sts is not None else 443)
    return Options(Target(host, mx.port, mx_lookup=False), tls=TlsPolicy(request.tls or "verify"),
                   ca_file=mx.ca_path, rcpt=request.rcpt, helo="lab.fakemx.test",
                   timeouts=API_TIMEOUTS)


async def diagnosis(mx: FakeMX, request: DiagnoseRequest) -> Diagnosis:
    options = options_for(mx, request)
    report = await asyncio.to_thread(diagnose, options)
    return _out(mx, report)


def _out(mx: FakeMX, report: Report) -> Diagnosis:
    verdict = report.verdict

    def advice(items: tuple[object, ...]) -> list[DiagnosisAdvice]:
        return [DiagnosisAdvice.model_validate(item, from_attributes=True) for item in items]

    return Diagnosis(
        server=mx.name,
        target=f"{report.target.name}:{report.target.port}",
        steps=[DiagnosisStep(name=s.name, severity=str(s.severity), line=s.line,
                             finding=str(s.finding) if s.finding else None)
               for s in report.steps],
        verdict=DiagnosisVerdict(
            code=verdict.code, title=verdict.title, evidence=verdict.evidence,
            healthy=verdict.healthy, causes=list(verdict.causes), fixes=list(verdict.fixes),
            profiles=list(verdict.profiles), also=advice(verdict.also),
            conditions=advice(verdict.conditions), not_probed=list(verdict.not_probed)),
        text=render.text(report),
    )
