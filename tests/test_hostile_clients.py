"""No client can stop, starve or exhaust fakemx: pipelined bursts, descriptor floods,
one address taking every slot, log floods, and junk after STARTTLS."""

from __future__ import annotations

import contextlib
import resource
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

from wire import command, connect, dialogue, read_reply, until, wait_closed

from fakemx import FakeMX, Outcome, profile_from_data
from fakemx.addresses import loopback_like
from fakemx.journal import Journal

RCPTS_IN_BURST = 9_000  # under commands_per_session
HEALTHY_CLIENT = """
import sys, time
from wire import dialogue
print("ready", flush=True)
sys.stdin.readline()
asked = time.time()
print(asked, dialogue("127.0.0.1", int(sys.argv[1])).code("body"))
"""


def test_a_pipelined_burst_does_not_hold_up_other_sessions() -> None:
    burst = b"EHLO burst.example\r\nMAIL FROM:<a@burst.example>\r\n" + b"".join(
        b"RCPT TO:<r%d@dest.example>\r\n" % n for n in range(RCPTS_IN_BURST)
    )  # 250 kB in one write
    replies = bytearray()

    def read_all(sock: socket.socket) -> None:  # so the burst never waits on its replies
        while replies.count(b"\r\n") < 1 + RCPTS_IN_BURST + 2 + 5:  # EHLO is multi-line
            chunk = sock.recv(65536)
            if not chunk:
                return
            replies.extend(chunk)

    with FakeMX() as mx, connect(mx.host, mx.port, timeout=60) as hostile:
        # The healthy client runs in its own process, so it never waits for the GIL
        # that this process's server thread holds while it answers the burst.
        healthy_client = subprocess.Popen(
            [sys.executable, "-c", HEALTHY_CLIENT, str(mx.port)], cwd=Path(__file__).parent,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert healthy_client.stdout is not None
        assert healthy_client.stdin is not None
        assert healthy_client.stdout.readline() == "ready\n"
        reader = threading.Thread(target=read_all, args=(hostile,))
        reader.start()
        hostile.sendall(burst)
        until(lambda: len(mx.sessions[0].commands) >= 100)
        asked, code = healthy_client.communicate("go\n", timeout=60)[0].split()
        assert code == "250"
        reader.join(60)
        mx.wait_for(ended=1)
        burst_session, healthy = mx.sessions[0], mx.sessions[1]
        assert healthy.ended is not None
        meanwhile = [e for e in burst_session.events
                     if e.kind == "client" and float(asked) <= e.at <= healthy.ended]
        # Fair turns: the burst goes on only while the healthy client itself is busy
        # (about 300 commands in its seven round trips, seen here). Unfair: the
        # healthy client waited for all that was read at once (3,400 seen).
        assert len(meanwhile) < 1_500, len(meanwhile)

    rcpt_replies = bytes(replies).split(b"\r\n")[-RCPTS_IN_BURST - 1:-1]
    assert rcpt_replies[999] == b"250 OK"
    assert rcpt_replies[1000] == b"452 4.5.3 Error: too many recipients"  # Postfix's limit
    assert rcpt_replies[-1] == b"452 4.5.3 Error: too many recipients"


def test_one_address_cannot_take_every_session_slot() -> None:
    with FakeMX() as mx, contextlib.ExitStack() as held:
        for _ in range(1000):  # the default sessions_per_client
            sock = held.enter_context(connect(mx.host, mx.port))
            assert read_reply(sock).startswith(b"220")
        with connect(mx.host, mx.port) as one_more:
            closed = wait_closed(one_more)
        assert closed.data == b"421 4.7.0 Too many sessions from 127.0.0.1, try again later\r\n"
        assert dialogue(mx.host, mx.port, source="127.0.0.2").code("body") == 250


def _serve_with_fd_limit(state_dir: Path, limit: int) -> tuple[subprocess.Popen[bytes], int]:
    def cap() -> None:  # in the child: soft = hard, so fakemx cannot raise it
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    process = subprocess.Popen(
        [sys.executable, "-m", "fakemx", "serve", "--port", "0", "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=cap,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    assert "127.0.0.1:" in line, line
    return process, int(line.rsplit(":", 1)[1].split()[0])


def test_out_of_descriptors_is_a_421_not_a_hang_nor_a_log_flood(tmp_path: Path) -> None:
    process, port = _serve_with_fd_limit(tmp_path, 1024)
    with process, contextlib.ExitStack() as held:
        greeted = refused = 0
        for n in range(1100):  # more than 1,024 descriptors' worth, from ten addresses
            sock = held.enter_context(
                socket.create_connection(("127.0.0.1", port), timeout=10,
                                         source_address=(f"127.0.0.{2 + n % 10}", 0))
            )
            reply = read_reply(sock)
            if reply.startswith(b"220"):
                greeted += 1
            else:
                assert reply == b"421 4.3.2 Too many sessions, try again later\r\n"
                refused += 1
        assert greeted > 500, (greeted, refused)
        assert refused > 0, (greeted, refused)
        healthy = dialogue("127.0.0.1", port)
        assert healthy.text("greeting") == "421 4.3.2 Too many sessions, try again later\r\n"
        held.close()
        until(lambda: dialogue("127.0.0.1", port).code("body") == 250, timeout=10)
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert len(stderr) < 2_000, stderr[-2_000:]
    assert b"Traceback" not in stderr


def test_client_bytes_in_aiosmtpd_log_lines_are_escaped_and_throttled(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "fakemx", "serve", "--port", "0", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    with process:
        assert process.stdout is not None
        port = int(process.stdout.readline().decode().rsplit(":", 1)[1].split()[0])
        for _ in range(50):
            with connect("127.0.0.1", port) as sock:
                read_reply(sock)
                sock.sendall(b"\x16\x03\x01\x1b]0;owned\x07\x1b[2J\r\n" * 3)  # unknown commands
                answered = b""
                while answered.count(b"\r\n") < 3:
                    answered += sock.recv(4096)
                assert answered.startswith(b"500")
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert b"\x1b" not in stderr
    assert b"\x07" not in stderr
    assert b"unrecognised: \\x16\\x03\\x01\\x1b]0;OWNED\\x07\\x1b[2J" in stderr
    assert stderr.count(b"unrecognised") == 1  # one line per condition per interval


def test_unknown_commands_after_starttls_end_the_session_without_an_error() -> None:
    with FakeMX("tls-valid-starttls") as mx, connect(mx.host, mx.port) as sock:
        read_reply(sock)
        sock.sendall(b"EHLO client.example\r\n")
        read_reply(sock)
        sock.sendall(b"STARTTLS\r\n")
        assert read_reply(sock).startswith(b"220")
        context = ssl.create_default_context(cafile=mx.ca_path)
        with context.wrap_socket(sock, server_hostname=mx.hostname) as tls:
            tls.sendall(b"".join(b"BOGUS%d\r\n" % n for n in range(8)))  # one write
            answered = b""
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                while chunk := tls.recv(4096):
                    answered += chunk
        assert answered.endswith(b"502 5.5.1 Too many unrecognized commands, goodbye.\r\n")
        mx.wait_for(ended=1)
        assert mx.sessions[0].outcome is Outcome.CLOSED_AFTER_REPLY
        mx.check()  # before: AttributeError inside asyncio's TLS transport, kept as an incident


def test_made_up_commands_leave_nothing_behind_in_the_command_table() -> None:
    # fakemx keeps one runner per known command (fakemx/smtp/seam.py); a name a client
    # makes up must not be kept, or a client could grow the process without bound.
    from fakemx.smtp import seam

    with FakeMX() as mx:
        for round_ in range(3):
            with connect(mx.host, mx.port) as sock:
                read_reply(sock)
                for n in range(4):  # aiosmtpd ends the session after a few of them
                    reply = command(sock, f"MADEUP{'X' * (round_ * 4 + n)}")
                    assert reply.startswith(b"500"), reply
                assert command(sock, "NOOP").startswith(b"250")
        known = dict(seam._RUNNERS)
        with connect(mx.host, mx.port) as sock:
            read_reply(sock)
            for n in range(4):
                assert command(sock, f"ZZ{'Q' * n}").startswith(b"500")
        assert known == seam._RUNNERS
        assert not any(name.startswith(("MADEUP", "ZZ")) for _, name in seam._RUNNERS)


def test_message_bodies_beyond_the_memory_budget_are_read_from_the_store() -> None:
    mx = FakeMX()
    mx.journal = Journal(body_bytes=250_000)
    bodies = [b"Subject: %d\r\n\r\n" % n + (bytes([65 + n]) * 98 + b"\r\n") * 1000
              for n in range(5)]
    with mx, smtplib.SMTP(mx.host, mx.port) as client:
        for body in bodies:
            client.sendmail("a@x.example", ["b@dest.example"], body)
        mx.wait_for(messages=5)
        kept = [m.body.in_memory for m in mx.messages]
        assert kept == [False, False, False, True, True]
        assert [m.content for m in mx.messages] == bodies


def test_dns_listens_on_loopback_unless_asked() -> None:
    assert loopback_like("0.0.0.0") == "127.0.0.1"  # never a reflector on every interface
    assert loopback_like("192.0.2.10") == "127.0.0.1"
    assert loopback_like("::") == "::1"
    assert loopback_like("127.0.0.2") == "127.0.0.2"
    with FakeMX("4.4.312-servfail", host="127.0.0.2") as mx:
        assert mx.dns is not None
        assert mx.dns.address.startswith("127.0.0.2:")
    with FakeMX("4.4.312-servfail", dns_host="127.0.0.3") as mx:
        assert mx.dns is not None
        assert mx.dns.address.startswith("127.0.0.3:")


def test_a_client_that_stops_reading_does_not_hold_its_session_for_ever() -> None:
    big_reply = "\n".join(["2.1.0 " + "x" * 900] * 60)  # 54 kB a MAIL
    profile = profile_from_data({"idle_timeout_seconds": 1, "rules": [
        {"stage": "mail", "reply": {"code": 250, "text": big_reply}}]}, "test")
    with FakeMX(profile) as mx:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((mx.host, mx.port))
        with sock:
            read_reply(sock)
            sock.sendall(b"EHLO c.example\r\n" + b"MAIL FROM:<a@b.example>\r\nRSET\r\n" * 200)
            # It never reads the 10 MB of replies. Before: the session stayed open (its
            # idle timer's close waited on them for ever); now the kernel ends it.
            mx.wait_for(ended=1, timeout=60)
        assert mx.sessions[0].outcome in (Outcome.CLIENT_RESET, Outcome.ERROR, Outcome.TIMEOUT)


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    def cap() -> None:  # in the child: soft 1,024 under a hard 4,096
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))

    process = subprocess.Popen(
        [sys.executable, "-m", "fakemx", "serve", "--port", "0", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=cap)
    with process:
        assert process.stdout is not None
        assert b"127.0.0.1:" in process.stdout.readline()  # ready
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        process.terminate()
        process.wait(timeout=10)
    line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
    assert line.split()[3:5] == ["4096", "4096"], line
