"""The Node peers of the sink bench: MailDev and nodemailer's smtp-server, run from bench/node.

Both come pinned in bench/node/package-lock.json and are installed with
``npm ci`` into bench/node/node_modules the first time the bench needs them
(never in ``--smoke``: CI runs only what is already there). Both reverse-resolve
every client, as shipped (from /etc/hosts for 127.0.0.1); so that a lookup
never leaves loopback, Node's resolver is pointed at 127.0.0.1
(bench/node/loopback-dns.js). When node, npm or the modules are missing,
``unavailable`` says why and the bench prints that the peer was skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE_PEERS = ("maildev", "smtp-server")
NODE_MAJOR = 20  # both packages' engines field


def unavailable(install: bool) -> str | None:
    """Why the Node peers cannot run (None: they can), installing them first if ``install``."""
    if shutil.which("node") is None:
        return "node is not installed"
    version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0] or 0) < NODE_MAJOR:
        return f"node {version} is older than the {NODE_MAJOR} that MailDev and smtp-server need"
    installed = NODE_DIR / "node_modules" / ".package-lock.json"  # written last by npm ci
    lock = NODE_DIR / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return None
    if not install:
        state = "older than package-lock.json" if installed.exists() else "missing"
        return f"{NODE_DIR / 'node_modules'} is {state} (npm ci --prefix bench/node)"
    if shutil.which("npm") is None:
        return "npm is not installed"
    print(f"installing the Node peers: npm ci --prefix {NODE_DIR}", flush=True)
    result = subprocess.run(["npm", "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"npm ci failed ({last})"
    return None


def command(kind: str, port: int, web_port: int) -> list[str]:
    """The command line of a Node peer listening for SMTP on 127.0.0.1:``port``."""
    if kind == "maildev":  # as shipped (web UI on, mail kept in memory), on loopback only
        return ["node", str(NODE_DIR / "node_modules" / "maildev" / "dist" / "bin" / "maildev.js"),
                "--smtp", str(port), "--ip", "127.0.0.1", "--web", str(web_port),
                "--web-ip", "127.0.0.1"]
    return ["node", str(NODE_DIR / "smtp-server-sink.js"), str(port)]


def environment(scratch: str) -> dict[str, str]:
    """Node's resolver on loopback; MailDev writes its .eml files under ``scratch``."""
    return {**os.environ, "TMPDIR": scratch,
            "NODE_OPTIONS": f"--require {NODE_DIR / 'loopback-dns.js'}"}
