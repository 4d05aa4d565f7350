"""The policy file a policy host serves at /.well-known/mta-sts.txt (RFC 8461 3.2): pure."""

from __future__ import annotations

from fakemx.mtasts.model import MtaSts

POLICY_PATH = "/.well-known/mta-sts.txt"


def policy_text(spec: MtaSts, elapsed_seconds: float = 0.0) -> bytes:
    """The policy: key/value lines, CRLF-terminated (RFC 8461 3.2).

    ``invalid_policy``: the same lines with ``mode: enforced``, a value the
    grammar does not have, so a conforming sender rejects the whole policy.
    """
    mode = "enforced" if spec.fault == "invalid_policy" else spec.mode
    mx_lines = (f"mx: {mx}" for mx in spec.mx_at(elapsed_seconds))
    lines = ["version: STSv1", f"mode: {mode}", *mx_lines,
             f"max_age: {spec.max_age}"]
    return "".join(f"{line}\r\n" for line in lines).encode()


def response(spec: MtaSts, method: str, path: str,
             elapsed_seconds: float = 0.0) -> tuple[int, str, bytes]:
    """(status, reason, body) for a request: the policy, or the fault's HTTP status."""
    if method not in ("GET", "HEAD"):
        return 405, "Method Not Allowed", b"GET only\n"
    if path != POLICY_PATH or spec.fault == "not_found":
        return 404, "Not Found", b"no policy here\n"
    if spec.fault == "server_error":
        return 500, "Internal Server Error", b"the policy host failed\n"
    return 200, "OK", policy_text(spec, elapsed_seconds)
