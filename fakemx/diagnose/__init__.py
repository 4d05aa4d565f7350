"""``fakemx diagnose``: probe a destination as a relay would and name the documented error.

    report = diagnose(Options(Target("example.test")))
    print(render.text(report))

``probe`` talks to the network (DNS, one SMTP session, follow-up handshakes
when TLS fails, the certificate's CRL or OCSP responder); ``verdict.decide`` is
pure; ``render`` shows it. It never sends DATA: no message leaves.
"""

from __future__ import annotations

from fakemx.diagnose.model import (
    Advice,
    Finding,
    Options,
    Report,
    Severity,
    Step,
    Target,
    Timeouts,
    TlsPolicy,
    Verdict,
)

__all__ = ["Advice", "Finding", "Options", "Report", "Severity", "Step", "Target", "Timeouts",
           "TlsPolicy", "Verdict", "diagnose"]


def diagnose(options: Options) -> Report:
    """Probe ``options.target`` and judge the evidence against the catalog."""
    from fakemx.diagnose.probe import probe
    from fakemx.diagnose.verdict import decide
    from fakemx.explain import codes
    from fakemx.profiles import catalog

    steps = probe(options)
    return Report(options.target, options, tuple(steps),
                  decide(steps, options, catalog(), codes()))
