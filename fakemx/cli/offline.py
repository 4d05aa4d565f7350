"""The commands that start no server: journal, list, explain, check, schema, export, ca."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from fakemx import explain as reference
from fakemx.clientbytes import shown
from fakemx.errors import FakeMXError
from fakemx.lint import lint
from fakemx.model import Profile
from fakemx.profiles import catalog, load_file
from fakemx.store import Store, export_messages


def _journal(args: argparse.Namespace) -> int:
    if not (args.state_dir / "fakemx.sqlite3").is_file():
        raise FakeMXError(f"{args.state_dir}: no fakemx store here (pass --state-dir)")
    store = Store(args.state_dir)
    try:
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


def _list(args: argparse.Namespace) -> int:
    if args.markdown:
        print(reference.markdown_table())
        return 0
    entries = [reference.entry(p) for p in catalog()]
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    width = max(len(e["name"]) for e in entries)
    for item in entries:
        print(f"{item['code']:<8} {item['name']:<{width}}  {item['title']}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    print(reference.explain(args.query))
    return 0


def _check(args: argparse.Namespace) -> int:
    """Validate, then lint (fakemx.lint): one line per problem, exit 2 if there is any."""
    failed = 0
    for path in args.files:
        try:
            profile = load_file(path)
        except FakeMXError as exc:
            print(exc, file=sys.stderr)
            failed += 1
            continue
        findings = lint(profile)
        for finding in findings:
            print(finding.line(str(path)), file=sys.stderr)
        if findings:
            failed += 1
        else:
            print(f"{path}: ok ({len(profile.rules)} rules, listener {profile.listener})")
    return 2 if failed else 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(Profile.model_json_schema(), indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    if not (args.state_dir / "fakemx.sqlite3").is_file():
        raise FakeMXError(f"{args.state_dir}: no fakemx store here (pass --state-dir)")
    store = Store(args.state_dir)
    try:
        count = export_messages(store, args.out, args.format)
    except OSError as exc:
        raise FakeMXError(f"--out {args.out}: cannot write there: {exc.strerror} (choose a"
                          " directory fakemx can create or write)") from None
    finally:
        store.close()
    print(f"fakemx: wrote {count} messages to {args.out} ({args.format})")
    return 0


def _ca(args: argparse.Namespace) -> int:
    _usable_state_dir(args.state_dir)
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

def _usable_state_dir(path: Path) -> Path:
    """``--state-dir``, made owner-only (0700) when missing; one line if it cannot be used."""
    fix = "pass --state-dir a directory fakemx can write, e.g. --state-dir ./.fakemx"
    if path.exists() and not path.is_dir():
        raise FakeMXError(f"--state-dir {path}: not a directory ({fix})")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise FakeMXError(f"--state-dir {path}: cannot create it: {exc.strerror} ({fix})") \
            from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise FakeMXError(f"--state-dir {path}: not writable ({fix})")
    return path
