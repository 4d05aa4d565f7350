"""The commands that start no server: journal, messages, list, explain, check, schema,
export, ca."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fakemx import catalog_cache, config
from fakemx.clientbytes import shown
from fakemx.errors import FakeMXError

if TYPE_CHECKING:
    from fakemx import check_cache
    from fakemx.store import Store

# The models, the store and the catalog are imported inside the commands that use
# them: `fakemx list` must start in well under a second (fakemx.catalog_cache).


def time_bound(text: str) -> float:
    """``--since``/``--until`` (``mailbox.parse_when``), for argparse."""
    from fakemx.mailbox import parse_when

    try:
        return parse_when(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _open_store(args: argparse.Namespace) -> Store:
    """The store of an existing state dir; one line naming the option if there is none."""
    if not (args.state_dir / "fakemx.sqlite3").is_file():
        where = config.origin(args, "state_dir")
        raise FakeMXError(f"{where} {args.state_dir}: no fakemx store here (pass --state-dir"
                          " or set FAKEMX_STATE_DIR to the server's state dir)")
    from fakemx.store import Store

    return Store(args.state_dir)


def _journal(args: argparse.Namespace) -> int:
    from fakemx import sessionlog

    store = _open_store(args)
    try:
        if args.follow:
            log_format = sessionlog.JSON if args.json else sessionlog.HUMAN
            sessionlog.follow(store, lambda line: print(line, flush=True), server=args.server,
                              last=args.limit, log_format=log_format)
        if args.json:
            for row in reversed(store.session_rows(server=args.server, limit=args.limit)):
                session = sessionlog.session_from_row(row)
                print(sessionlog.line(session, store.count_messages(session_id=session.id),
                                      sessionlog.JSON))
            return 0
        rows = store.session_rows(server=args.server, limit=args.limit)
    finally:
        store.close()
    for row in reversed(rows):
        started = time.strftime("%H:%M:%S", time.localtime(row["started"]))
        print(f"#{row['id']} {started} {row['server']} {row['client_ip']} "
              f"attempt {row['attempt']}: {row['ended_by']}")
        if args.events:
            for event in row["events"]:
                mark = {"client": "C:", "server": "S:"}.get(event["kind"], "  ")
                # What a client sent, escaped: no terminal escape, no unprintable byte.
                print(f"    {mark} {shown(event['text'])}")
    return 0


def _catalog_view() -> dict[str, Any]:
    """What list and explain print for the catalog (cached: fakemx.catalog_cache)."""
    from fakemx import explain as reference
    from fakemx.profiles import catalog

    profiles = catalog()
    queries = [p.name for p in profiles] + list(reference.codes())
    return {"entries": [reference.entry(p) for p in profiles],
            "markdown": reference.markdown_table(),
            "relays": reference.relays_table(),
            "explain": {query: reference.explain(query) for query in queries}}


def _list(args: argparse.Namespace) -> int:
    view = catalog_cache.view(_catalog_view)
    if args.markdown:
        print(view["markdown"])
        return 0
    if args.relays:
        print(view["relays"])
        return 0
    entries: list[dict[str, Any]] = view["entries"]
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    width = max(len(e["name"]) for e in entries)
    for item in entries:
        print(f"{item['code']:<8} {item['name']:<{width}}  {item['title']}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    if args.log is not None:
        if args.query is not None:
            raise FakeMXError(f"explain: give a code or profile, or --log, not both (got"
                              f" {args.query!r} and --log {args.log})")
        from fakemx.cli.diagnose import explain_log

        return explain_log(args.log)
    if args.query is None:
        raise FakeMXError("explain: give a code such as 4.4.316, a profile name, or --log FILE")
    known: dict[str, str] = catalog_cache.view(_catalog_view)["explain"]
    if args.query in known:
        print(known[args.query])
        return 0
    from fakemx import explain as reference  # another spelling, a file, or a mistake

    print(reference.explain(args.query))
    return 0


def _check(args: argparse.Namespace) -> int:
    """Validate, then lint (fakemx.lint): one line per problem, exit 2 if there is any.

    An unchanged file's outcome comes from fakemx.check_cache, without importing
    pydantic; a changed one is checked for real."""
    from fakemx import check_cache

    failed = 0
    for path in args.files:
        try:
            data = path.read_bytes()
        except OSError:  # checked for real: its error says what is wrong now
            outcome = _check_file(path, None)
        else:
            outcome = check_cache.outcome(path, data, functools.partial(_check_file, path, data))
        for line in outcome.lines:
            print(line, file=sys.stdout if outcome.ok else sys.stderr)
        failed += not outcome.ok
    return 2 if failed else 0


def _check_file(path: Path, data: bytes | None) -> check_cache.Outcome:
    """What ``fakemx check`` says of ``data``, read from ``path`` (None: read it now)."""
    from fakemx.check_cache import Outcome
    from fakemx.lint import lint
    from fakemx.profiles import profile_from_bytes, read_file

    try:
        profile = profile_from_bytes(path, read_file(path) if data is None else data)
    except FakeMXError as exc:
        return Outcome(False, [str(exc)])
    findings = lint(profile)
    if findings:
        return Outcome(False, [finding.line(str(path)) for finding in findings])
    return Outcome(True, [f"{path}: ok ({len(profile.rules)} rules, listener {profile.listener})"])


def _schema(args: argparse.Namespace) -> int:
    from fakemx.model import Profile

    print(json.dumps(Profile.model_json_schema(), indent=2))
    return 0


def _messages(args: argparse.Namespace) -> int:
    from fakemx.mailbox import MessageQuery

    query = MessageQuery(sender=args.sender, recipient=args.recipient, subject=args.subject,
                         since=args.since, until=args.until, server=args.server)
    store = _open_store(args)
    try:
        found = list(store.find_messages(query))
        if args.delete:
            deleted = store.delete_messages([info.id for info in found])
            print(f"fakemx: deleted {deleted} message{'' if deleted == 1 else 's'}"
                  f" from {args.state_dir}")
            return 0
    finally:
        store.close()
    for info in found:
        if args.json:
            print(json.dumps({"id": info.id, "session_id": info.session_id,
                              "server": info.server, "received": info.received,
                              "mail_from": shown(info.mail_from),
                              "rcpt_tos": [shown(r) for r in info.rcpt_tos],
                              "subject": shown(info.subject), "size": info.size}))
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.received))
            print(f"#{info.id} {when} <{shown(info.mail_from)}> -> "
                  f"{', '.join(shown(r) for r in info.rcpt_tos)}: {shown(info.subject)!r}"
                  f" ({info.size} bytes)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from fakemx.mailbox import export_messages

    store = _open_store(args)
    try:
        count = export_messages(store, args.out, args.format, envelope=not args.as_received)
    except OSError as exc:
        raise FakeMXError(f"--out {args.out}: cannot write there: {exc.strerror} (choose a"
                          " directory fakemx can create or write)") from None
    finally:
        store.close()
    print(f"fakemx: wrote {count} messages to {args.out} ({args.format})")
    return 0


def _ca(args: argparse.Namespace) -> int:
    _usable_state_dir(args.state_dir, config.origin(args, "state_dir"))
    pem = _export_ca(args.state_dir, args.out, "--out")
    if args.out is None:
        sys.stdout.write(pem.decode("ascii"))
    else:
        print(f"fakemx: wrote the CA certificate to {args.out} (state dir {args.state_dir})")
    return 0


def _export_ca(state_dir: Path, out: Path | None, option: str) -> bytes:
    from fakemx.tls.certs import export_ca  # trustme and cryptography only when asked for

    try:
        return export_ca(state_dir, out)
    except OSError as exc:
        raise FakeMXError(f"{option} {out}: cannot write it: {exc.strerror}"
                          " (choose a file in a directory fakemx can write)") from None

def _usable_state_dir(path: Path, where: str = "--state-dir") -> Path:
    """``--state-dir``, made owner-only (0700) when missing; one line if it cannot be used.

    ``where`` names the option or variable (``FAKEMX_STATE_DIR``) the path came from.
    """
    fix = f"give {where} a directory fakemx can write, e.g. ./.fakemx"
    if path.exists() and not path.is_dir():
        raise FakeMXError(f"{where} {path}: not a directory ({fix})")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise FakeMXError(f"{where} {path}: cannot create it: {exc.strerror} ({fix})") \
            from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise FakeMXError(f"{where} {path}: not writable ({fix})")
    return path
