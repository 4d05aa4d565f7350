"""A report as people read it (one line per step, then the verdict) and as tools read it."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from fakemx.clientbytes import shown
from fakemx.diagnose.model import Options, Report, Severity, TlsPolicy

_MARKS = {Severity.OK: "ok  ", Severity.INFO: "info", Severity.WARN: "warn",
          Severity.FAIL: "FAIL", Severity.SKIP: "skip"}


def text(report: Report) -> str:
    target, options = report.target, report.options
    how = "MX lookup" if target.mx_lookup else "host"
    lines = [f"fakemx diagnose {target.name} (port {target.port}, {how}, --tls {options.tls})",
             f"  {options.timeouts.describe()}",
             f"  sends: {sends(options)}; never DATA, never a message", ""]
    width = max((len(step.name) for step in report.steps), default=0)
    for step in report.steps:
        # Server bytes are shown escaped: a hostile server writes no terminal controls here.
        lines.append(f"{_MARKS[step.severity]} {step.name:<{width}}  {shown(step.line)}")
    verdict = report.verdict
    lines += ["", f"verdict: {verdict.code} {shown(verdict.title)}",
              f"  evidence: {shown(verdict.evidence)}"]
    if verdict.profiles:
        lines.append(f"  like catalog profiles: {', '.join(verdict.profiles)}"
                     " (fakemx explain NAME)")
    for title, items in (("causes", verdict.causes), ("fixes", verdict.fixes)):
        if items:
            lines.append(f"  {title}:")
            lines += [f"    - {item}" for item in items]
    for title, advice in (("also", verdict.also), ("conditions", verdict.conditions)):
        if advice:
            lines.append(f"  {title}:")
            lines += [f"    - {a.code} {shown(a.condition)}"
                      + (f" ({', '.join(a.profiles)})" if a.profiles else "") for a in advice]
    lines.append("  not probed:")
    lines += [f"    - {item}" for item in verdict.not_probed]
    return "\n".join(lines)


def sends(options: Options) -> str:
    """The commands the probe writes, in order."""
    commands = ["EHLO"] + (["STARTTLS"] if options.tls is not TlsPolicy.NONE else [])
    if options.rcpt:
        commands += ["MAIL FROM:<>", f"RCPT TO:<{options.rcpt}>"]
    return ", ".join([*commands, "QUIT"])


def as_json(report: Report) -> str:
    return json.dumps(as_dict(report), indent=2, default=str)


def as_dict(report: Report) -> dict[str, Any]:
    data = asdict(report)
    data["verdict"]["healthy"] = report.verdict.healthy
    data["options"]["timeouts"]["text"] = report.options.timeouts.describe()
    return data
