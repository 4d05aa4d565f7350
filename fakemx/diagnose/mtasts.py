"""MTA-STS (RFC 8461) for a mail domain, when it publishes one: the policy a relay would apply.

The ``_mta-sts.<domain>`` TXT record (``v=STSv1; id=...``), then one HTTPS GET
of ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` at the address the
same resolver gives (``--mta-sts-port``, 443 as relays use), with the
certificate verified against ``--ca`` or the system's CAs and the name
``mta-sts.<domain>``; no redirects followed (RFC 8461 3.3), the body read up to
64 KiB, connect and answer each bounded by ``--timeout``. The policy parsed
(RFC 8461 3.2), and the MX host matched against its ``mx`` patterns.

A TXT record without a policy that can be fetched and parsed is no policy:
relays deliver as if there were none and report it by TLS-RPT (RFC 8460's
sts-policy-fetch-error, sts-policy-invalid, sts-webpki-invalid), so these are
conditions. Under ``mode: enforce`` an MX the policy does not list is 4.4.8,
and the MX's certificate must verify (``probe.Session``: 4.7.5 otherwise).
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass

from fakemx.diagnose import tlsprobe
from fakemx.diagnose.dnsprobe import Address, Lookup
from fakemx.diagnose.model import Finding, Options, Severity, Step, is_address

POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_POLICY_BYTES = 64 * 1024
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 3.2: at most a year
MODES = ("enforce", "testing", "none")


@dataclass(frozen=True)
class Policy:
    mode: str
    mx: tuple[str, ...]
    max_age: int

    @property
    def enforced(self) -> bool:
        return self.mode == "enforce"

    def covers(self, host: str) -> bool:
        """RFC 8461 4.1: an exact name, or ``*.`` standing for exactly one label."""
        host = host.lower().rstrip(".")
        for pattern in (p.lower().rstrip(".") for p in self.mx):
            if pattern == host or (pattern.startswith("*.") and "." in host
                                   and host.split(".", 1)[1] == pattern[2:]):
                return True
        return False


class Invalid(ValueError):
    """The policy text does not parse (the reason is the message)."""


def parse(text: str) -> Policy:
    """RFC 8461 3.2: ``key: value`` lines; version STSv1, a mode, max_age, mx unless none."""
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise Invalid(f"line {line!r} is not 'key: value'")
        fields.setdefault(key.strip(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise Invalid(f"version is {fields.get('version')}, not STSv1")
    mode = fields.get("mode", [""])[0]
    if mode not in MODES:
        raise Invalid(f"mode: {mode or '(missing)'} is not one of {', '.join(MODES)}")
    age = fields.get("max_age", [""])[0]
    if not age.isdigit() or int(age) > MAX_AGE_LIMIT:
        raise Invalid(f"max_age: {age or '(missing)'} is not 0..{MAX_AGE_LIMIT}")
    mx = tuple(fields.get("mx", []))
    if mode != "none" and not mx:
        raise Invalid("no mx: line (required unless mode: none)")
    return Policy(mode, mx, int(age))


def check(options: Options, address: Address, steps: list[Step]) -> Policy | None:
    """The domain's policy, and its verdict on the MX host; None when there is none."""
    domain = options.target.name
    if not options.target.mx_lookup or is_address(domain):
        return None
    lookup = Lookup(options)
    txt = lookup.ask(f"_mta-sts.{domain}", "TXT")
    records = [r.replace('" "', "").strip('"') for r in txt.records]
    ids = [r for r in records if r.startswith("v=STSv1")]
    if len(ids) != 1:
        seen = "none" if not ids else f"{len(ids)} records, which RFC 8461 3.1 counts as none"
        steps.append(Step("mta-sts", Severity.INFO, f"TXT _mta-sts.{domain}: {seen}"
                          f"{f' ({txt.problem})' if txt.problem else ''}: no MTA-STS policy"))
        return None
    policy_id = next((f.split("=", 1)[1].strip() for f in ids[0].split(";")
                      if f.strip().startswith("id=")), "?")
    host = f"mta-sts.{domain}"
    url = f"https://{host}{'' if options.mta_sts_port == 443 else f':{options.mta_sts_port}'}" \
          f"{POLICY_PATH}"
    fetched = _fetch(options, lookup, host, url)
    if isinstance(fetched, Step):
        steps.append(fetched)
        return None
    try:
        policy = parse(fetched)
    except Invalid as exc:
        steps.append(_no_policy(f"{url}: the policy does not parse: {exc}",
                                Finding.STS_POLICY_INVALID, "mta-sts-policy-invalid"))
        return None
    said = f"id={policy_id}, mode {policy.mode}, mx {', '.join(policy.mx) or '(none)'}," \
           f" max_age {policy.max_age} s"
    mx = address.host.rstrip(".")
    if policy.mode != "none" and not policy.covers(mx):
        enforced = policy.enforced
        steps.append(Step("mta-sts", Severity.FAIL if enforced else Severity.WARN,
                          f"{url}: {said}; the MX {mx} is not in it"
                          + (": a relay that applies it does not deliver (validation-failure)"
                             if enforced else " (mode testing: reported by TLS-RPT only)"),
                          Finding.STS_MX_MISMATCH, facts={"id": policy_id, "profiles": [
                              "4.4.8-mta-sts-mx-mismatch", "4.4.8-mta-sts-policy-changed"]}))
        return policy
    steps.append(Step("mta-sts", Severity.OK, f"{url}: {said}; the MX {mx} is in it"
                      + ("; so its certificate must verify" if policy.enforced else ""),
                      facts={"id": policy_id, "mode": policy.mode, "mx": list(policy.mx)}))
    return policy


def _fetch(options: Options, lookup: Lookup, host: str, url: str) -> str | Step:
    """The policy's text, or the step that says why it could not be had."""
    answer = lookup.ask(host, "A")
    if not answer.records:
        return _no_policy(f"{host}: no address ({answer.problem or 'no A record'})",
                          Finding.STS_FETCH_ERROR, "mta-sts-policy-host-down")
    seconds = options.timeouts.reply_seconds
    connection = _Https(host, answer.records[0], options.mta_sts_port, seconds,
                        tlsprobe.client_context(True, options.ca_file))
    try:
        connection.request("GET", POLICY_PATH, headers={"Connection": "close"})
        response = connection.getresponse()
        body = response.read(MAX_POLICY_BYTES)
    except ssl.SSLCertVerificationError as exc:
        return _no_policy(f"{url}: the policy host's certificate does not verify:"
                          f" {exc.verify_message}", Finding.STS_WEBPKI_INVALID,
                          "mta-sts-policy-host-untrusted")
    except ConnectionRefusedError:
        return _no_policy(f"{url}: connection refused", Finding.STS_FETCH_ERROR,
                          "mta-sts-policy-host-down")
    except TimeoutError:
        return _no_policy(f"{url}: no answer within {seconds:g} s", Finding.STS_FETCH_ERROR,
                          "mta-sts-policy-host-timeout")
    except (OSError, http.client.HTTPException) as exc:
        return _no_policy(f"{url}: {type(exc).__name__}: {exc}", Finding.STS_FETCH_ERROR,
                          "mta-sts-policy-host-down")
    finally:
        connection.close()
    if response.status != 200:  # redirects included: RFC 8461 3.3 forbids following them
        profile = "mta-sts-policy-not-found" if response.status == 404 else \
            "mta-sts-policy-server-error"
        return _no_policy(f"{url}: HTTP {response.status} {response.reason}",
                          Finding.STS_FETCH_ERROR, profile)
    return body.decode("utf-8", errors="replace")


def _no_policy(line: str, finding: Finding, profile: str) -> Step:
    return Step("mta-sts", Severity.WARN, f"{line}: no policy, so relays deliver as if the"
                " domain had none", finding, facts={"profiles": [profile]})


class _Https(http.client.HTTPSConnection):
    """HTTPS to the address the probe's resolver gave, checking the certificate for ``host``."""

    def __init__(self, host: str, ip: str, port: int, timeout: float,
                 context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.ip = ip
        self.context = context

    def connect(self) -> None:
        sock = socket.create_connection((self.ip, self.port), self.timeout)
        try:
            self.sock = self.context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
