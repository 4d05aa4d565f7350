"""``fakemx serve --workers 2``: real processes on one port (SO_REUSEPORT), real clients.

The kernel picks the worker for each connection; each test connects until it
has seen what it needs on both workers (bounded), reading which worker served a
connection from the store (the ``worker`` column of its session, by the
client's port).
"""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from processes import Process, clean_env, process

from fakemx import FakeMX

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")

TRIES = 60  # connections before giving up on the kernel sending one to the other worker
# The tests' own client address: a relay elsewhere on the machine may retry to a port
# a test's fakemx now has, from 127.0.0.1; counts per client leave it out.
CLIENT_IP = "127.0.0.31"


def client(port: int) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", port, timeout=20, source_address=(CLIENT_IP, 0))


@contextmanager
def workers(state: Path, *args: str, count: int = 2) -> Iterator[tuple[Process, int, list[int]]]:
    """``fakemx serve ARGS --workers COUNT``: (the parent, its SMTP port, worker pids)."""
    with process("serve", *args, "--port", "0", "--workers", str(count), "--state-dir",
                 str(state), env=clean_env()) as parent:
        port = parent.port("fakemx: serving")
        yield parent, port, ready_pids(parent)


def ready_pids(parent: Process) -> list[int]:
    """The worker pids of the parent's ready line, in slot order."""
    ready = parent.said("workers ready")
    return [int(pid) for pid in ready.split("(pids ")[1].rstrip(")").split(", ")]


def session_of(state: Path, client_port: int) -> dict[str, object]:
    """The stored session of the connection from ``client_port`` (polled: a worker
    writes a finished session within a fraction of a second)."""
    deadline = time.monotonic() + 20
    with sqlite3.connect(f"file:{state / 'fakemx.sqlite3'}?mode=ro", uri=True) as db:
        while time.monotonic() < deadline:
            row = db.execute("SELECT worker, attempt, outcome FROM sessions WHERE"
                             " client_ip = ? AND client_port = ? ORDER BY id DESC LIMIT 1",
                             (CLIENT_IP, client_port)).fetchone()
            if row is not None:
                return {"worker": row[0], "attempt": row[1], "outcome": row[2]}
            time.sleep(0.02)
    raise AssertionError(f"no session from client port {client_port} in the store")


def rcpt(port: int, recipient: str = "bob@example.test") -> tuple[int, int]:
    """One delivery attempt: (the client's port, the RCPT reply code); sends the
    message when RCPT got 250."""
    with client(port) as smtp:
        client_port = smtp.sock.getsockname()[1]
        smtp.ehlo("relay.example.test")
        smtp.mail("alice@example.test")
        code, _ = smtp.rcpt(recipient)
        if code == 250:
            smtp.data(b"Subject: hi\r\n\r\nhello\r\n")
        else:
            smtp.rset()
    return client_port, code


def test_a_greylisted_retry_on_the_other_worker_is_accepted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # 300 s greylisting at time_scale 0.002: 0.6 s.
    with workers(state, "4.4.7-greylist-time", "--time-scale", "0.002") as (_, port, _pids):
        client_port, code = rcpt(port)
        assert code == 451
        first = session_of(state, client_port)
        assert first["attempt"] == 1
        time.sleep(0.7)  # the greylisting window itself (time-scaled), not a server wait
        for _ in range(TRIES):
            client_port, code = rcpt(port)
            session = session_of(state, client_port)
            if session["worker"] != first["worker"]:
                break
            assert code == 250  # the same worker, after the window
        else:
            pytest.fail(f"the kernel sent {TRIES} connections to one worker")
        # The other worker had never seen this client: with its own memory it would
        # count attempt 1 and defer it again.
        assert code == 250
        assert session["attempt"] > 1


def test_attempts_are_counted_once_across_workers(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with workers(state) as (_, port, _pids):
        seen = [session_of(state, rcpt(port)[0]) for _ in range(8)]
        for _ in range(TRIES):
            if len({s["worker"] for s in seen}) == 2:
                break
            seen.append(session_of(state, rcpt(port)[0]))
        assert {s["worker"] for s in seen} == {0, 1}
        assert sorted(int(str(s["attempt"])) for s in seen) == list(range(1, len(seen) + 1))
    # Counted in a database of their own (the store's write lock is held for each commit
    # of messages), owner-only as the store is: it holds client addresses.
    with sqlite3.connect(state / "fakemx-shared.sqlite3") as db:
        (attempts,) = db.execute("SELECT attempts FROM shared_clients WHERE client = ?",
                                 (CLIENT_IP,)).fetchone()
    assert attempts == len(seen)
    assert (state / "fakemx-shared.sqlite3").stat().st_mode & 0o777 == 0o600


def test_a_times_3_rule_fires_3_times_in_all(tmp_path: Path) -> None:
    profile = tmp_path / "three.toml"
    profile.write_text('name = "three-deferrals"\n[[rules]]\nstage = "rcpt"\ntimes = 3\n'
                       'times_per = "client"\n'  # this test's client's: see CLIENT_IP
                       'reply = { code = 451, text = "4.7.1 try again later" }\n')
    state = tmp_path / "state"
    with workers(state, str(profile)) as (_, port, _pids):
        served = {0: 0, 1: 0}
        codes: list[int] = []
        for _ in range(TRIES):
            client_port, code = rcpt(port)
            codes.append(code)
            served[int(str(session_of(state, client_port)["worker"]))] += 1
            if min(served.values()) >= 3:
                break
        assert min(served.values()) >= 3, served  # each worker alone would fire 3 times
        assert codes.count(451) == 3
        assert codes[:3] == [451, 451, 451]


def test_kill_9_of_a_worker_loses_nothing_that_got_250_and_it_is_restarted(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    with workers(state) as (parent, port, pids):
        acknowledged: list[str] = []
        stop = threading.Event()

        def send() -> None:
            number = 0
            while not stop.is_set():
                number += 1
                subject = f"{threading.get_ident()}-{number}"
                try:
                    with client(port) as smtp:
                        smtp.sendmail("a@example.test", ["b@example.test"],
                                      f"Subject: {subject}\r\n\r\nbody\r\n".encode())
                except (smtplib.SMTPException, OSError):
                    continue  # its worker was killed: not acknowledged, may be lost
                acknowledged.append(subject)

        senders = [threading.Thread(target=send) for _ in range(4)]
        for thread in senders:
            thread.start()
        try:
            while len(acknowledged) < 20:
                time.sleep(0.01)
            os.kill(pids[1], signal.SIGKILL)
            again = parent.said("worker 1 ready again")
            new_pid = int(again.rsplit("pid ", 1)[1].rstrip(")"))
            assert new_pid != pids[1]
            mark = len(acknowledged)
            while len(acknowledged) < mark + 20:
                time.sleep(0.01)
        finally:
            stop.set()
            for thread in senders:
                thread.join()
        # The restarted worker serves again on the same port.
        for _ in range(TRIES):
            if session_of(state, rcpt(port)[0])["worker"] == 1:
                break
        else:
            pytest.fail("no connection reached the restarted worker")
    with sqlite3.connect(state / "fakemx.sqlite3") as db:
        stored = {bytes(row[0]).split(b"\r\n")[0].removeprefix(b"Subject: ").decode()
                  for row in db.execute("SELECT content FROM messages")}
    assert set(acknowledged) <= stored


def test_the_api_lists_sessions_of_both_workers(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with process("serve", "--port", "0", "--workers", "2", "--state-dir", str(state),
                 "--api", "0", env=clean_env()) as parent:
        port = parent.port("fakemx: serving")
        api = parent.api()
        parent.said("workers ready")
        served: dict[int, int] = {}
        for _ in range(TRIES):
            client_port, _ = rcpt(port)
            served[client_port] = int(str(session_of(state, client_port)["worker"]))
            if len(set(served.values())) == 2:
                break
        assert set(served.values()) == {0, 1}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{api}/api/sessions?limit=100") as reply:
                listed = {item["client_port"]: item["id"] for item in json.load(reply)["items"]
                          if item["client_ip"] == CLIENT_IP}
            if set(served) <= set(listed):
                break
            time.sleep(0.05)
        assert set(served) <= set(listed)
        with urllib.request.urlopen(f"{api}/api/messages?limit=100") as reply:
            messages = [item for item in json.load(reply)["items"]  # ours: see CLIENT_IP
                        if item["session_id"] in listed.values()]
        assert sorted(m["session_id"] for m in messages) == sorted(listed[p] for p in served)
        for message in messages:  # every worker's bodies, whole
            with urllib.request.urlopen(f"{api}/api/messages/{message['id']}/raw") as reply:
                assert reply.read().endswith(b"hello\r\n")
            assert message["size"] == len(b"Subject: hi\r\n\r\nhello\r\n")


def test_sigterm_stops_every_worker_and_exits_0(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with workers(state) as (parent, port, pids):
        rcpt(port)
        parent.popen.send_signal(signal.SIGTERM)
        assert parent.popen.wait(timeout=20) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_the_api_refuses_run_time_changes_and_resets_every_worker(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with process("serve", "4.4.7-greylist-attempts", "--port", "0", "--workers", "2",
                 "--state-dir", str(state), "--api", "0", env=clean_env()) as parent:
        port = parent.port("fakemx: serving")
        api = parent.api()
        parent.said("workers ready")
        server = urllib.request.urlopen(f"{api}/api/servers").read()
        name = json.loads(server)[0]["name"]
        request = urllib.request.Request(
            f"{api}/api/servers/{name}/listener", method="PUT",
            data=b'{"state": "refuse"}', headers={"content-type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request)
        assert refused.value.code == 409
        assert "one worker only" in json.load(refused.value)["error"]
        attempts = [session_of(state, rcpt(port)[0]) for _ in range(3)]
        assert [a["attempt"] for a in attempts] == [1, 2, 3]
        reset = urllib.request.Request(f"{api}/api/servers/{name}/reset", method="POST")
        urllib.request.urlopen(reset).close()
        # Forgotten by every worker: the next connection is attempt 1 wherever it lands.
        assert session_of(state, rcpt(port)[0])["attempt"] == 1


def test_bad_workers_and_a_dns_profile_are_one_line_errors(tmp_path: Path) -> None:
    from processes import fakemx_run

    bad = fakemx_run("serve", "--workers", "0", "--state-dir", str(tmp_path))
    assert bad.returncode == 2
    assert "not a number of workers" in bad.stderr
    assert "Traceback" not in bad.stderr
    env = clean_env(FAKEMX_WORKERS="many")
    bad_env = fakemx_run("serve", "--state-dir", str(tmp_path), env=env)
    assert bad_env.returncode == 2
    assert "FAKEMX_WORKERS='many'" in bad_env.stderr
    dns = fakemx_run("serve", "4.4.312-nxdomain", "--port", "0", "--workers", "2",
                     "--state-dir", str(tmp_path))
    assert dns.returncode == 2
    assert "--workers 1" in dns.stderr
    assert len(dns.stderr.strip().splitlines()) == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = fakemx_run("serve", "--port", str(taken.getsockname()[1]), "--workers", "2",
                          "--state-dir", str(tmp_path))
    assert busy.returncode == 2
    assert busy.stderr.count("\n") == 1  # the worker's own line, once
    assert "address already in use" in busy.stderr


TABLE_ROW = re.compile(r"^127\.0\.0\.1:(\d+)\s+(\S+)\s")


def test_a_lab_of_2_workers_keeps_refusals_and_timeouts_real(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with process("lab", "--base-port", "0", "--workers", "2", "--state-dir", str(state),
                 env=clean_env()) as parent:
        ports = {}
        while "4.4.315-connect-timeout" not in ports or "4.4.316-connection-refused" not in ports:
            row = TABLE_ROW.match(parent.said("127.0.0.1:"))  # not a session's line
            if row is not None:
                ports[row[2]] = int(row[1])
        parent.said("workers ready")
        for _ in range(8):  # whichever worker the kernel would pick
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", ports["4.4.316-connection-refused"]), 5)
            with pytest.raises(TimeoutError):
                socket.create_connection(("127.0.0.1", ports["4.4.315-connect-timeout"]), 0.3)


def test_workers_stop_when_their_parent_is_killed(tmp_path: Path) -> None:
    parent = Process("serve", "--port", "0", "--workers", "2", "--state-dir",
                     str(tmp_path / "state"), env=clean_env())
    with parent.popen:
        pids = ready_pids(parent)
        parent.popen.kill()
        parent.popen.wait(timeout=20)
        deadline = time.monotonic() + 20
        alive = list(pids)
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if _running(pid)]
            time.sleep(0.02)
        assert alive == []


def _running(pid: int) -> bool:
    """Is ``pid`` still running (not gone, and not a zombie waiting for init)?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("count", ['{ above = 2, per = "client" }',
                                   '{ rate = "2/1h", per = "client" }'])
def test_message_counts_and_rate_windows_add_up_across_workers(tmp_path: Path,
                                                               count: str) -> None:
    profile = tmp_path / "counted.toml"
    profile.write_text(f'name = "two-per-client"\n[[rules]]\nstage = "mail"\n'
                       f'when = {{ messages = {count} }}\n'
                       f'reply = {{ code = 452, text = "4.5.3 too many messages" }}\n')
    state = tmp_path / "state"
    with workers(state, str(profile)) as (_, port, _pids):
        served = {0: 0, 1: 0}
        accepted = 0
        for _ in range(TRIES):
            with client(port) as smtp:
                client_port = smtp.sock.getsockname()[1]
                smtp.ehlo("relay.example.test")
                code, _ = smtp.mail("alice@example.test")
                accepted += code == 250
            served[int(str(session_of(state, client_port)["worker"]))] += 1
            if min(served.values()) >= 2:
                break
        assert min(served.values()) >= 2, served  # each worker alone would accept 2
        assert accepted == 2


def test_auto_is_one_worker_per_core_this_process_may_use() -> None:
    from fakemx import config

    assert config.workers("auto") == len(os.sched_getaffinity(0))
    assert config.workers("3") == 3


def test_a_store_from_before_workers_gets_the_worker_column(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "fakemx.sqlite3") as db:
        db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL,"
                   " server TEXT NOT NULL, received REAL NOT NULL, mail_from TEXT NOT NULL,"
                   " rcpt_tos TEXT NOT NULL, size INTEGER NOT NULL, content BLOB NOT NULL)")
        db.execute("INSERT INTO messages VALUES (1, 1, 's', 0, 'a@b', '[]', 2, x'6869')")
    with FakeMX(state_dir=tmp_path) as mx, smtplib.SMTP(mx.host, mx.port) as client:
        client.sendmail("a@example.test", ["b@example.test"], b"Subject: new\r\n\r\n")
    with sqlite3.connect(tmp_path / "fakemx.sqlite3") as db:
        assert db.execute("SELECT id, worker FROM messages ORDER BY id").fetchall() == [
            (1, None), (2, None)]


def test_sigterm_while_the_workers_start_exits_0(tmp_path: Path) -> None:
    parent = Process("serve", "--port", "0", "--workers", "2", "--state-dir",
                     str(tmp_path / "state"), env=clean_env())
    with parent.popen:
        parent.said("fakemx: serving")  # worker 0 listens; the parent waits for worker 1
        parent.popen.send_signal(signal.SIGTERM)
        assert parent.popen.wait(timeout=20) == 0
