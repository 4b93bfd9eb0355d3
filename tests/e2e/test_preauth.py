"""Pre-authentication exhaustion (issue 13, break 4) against a real server process.

One address (127.0.0.2 on loopback) opens raw TCP connections that never start TLS: beyond
the configured cap they are closed at once, before any TLS work, while a technician on
another address (127.0.0.1) is served; many bad enrollment tokens from one address are
refused with a clear message and logged as one summary line, not a line each. The
technician's latency under such a flood is measured by bench/flood.py, not asserted here.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from proto import MAX_VERSION
from proto import messages as m
from proto.errors import CloseCode
from proto.session import ClientSession
from tests.harness import Harness, wait_until

pytestmark = pytest.mark.e2e

#: Raw connections the flooding address opens (bounded: a test, not an attack).
FLOOD = 40
UNAUTHENTICATED_CAP = 8


def reset_or_closed(sock: socket.socket) -> bool:
    """Whether the server has closed this never-used connection (reset or EOF)."""
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    except OSError as exc:
        return exc.errno in (errno.ECONNRESET, errno.EPIPE)


@pytest.fixture
def flood(harness: Harness) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        yield socks
    finally:
        for s in socks:
            s.close()


def test_one_address_is_capped_before_tls_while_a_technician_works(
        harness: Harness, flood: list[socket.socket]) -> None:
    h = harness
    h.init_server(max_unauthenticated_per_address=UNAUTHENTICATED_CAP,
                  tls_handshake_timeout=60.0, handshake_timeout=60.0)
    server = h.start_server()
    alice = h.add_tech("alice")
    for _ in range(FLOOD):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", h.port))  # and never a ClientHello
        flood.append(s)
    refused = wait_until(
        lambda: (n := sum(map(reset_or_closed, flood))) >= FLOOD - UNAUTHENTICATED_CAP and n,
        what="the connections over the cap to be closed")
    assert refused == FLOOD - UNAUTHENTICATED_CAP
    assert not any(map(reset_or_closed, flood[:UNAUTHENTICATED_CAP])), "the first ones wait"
    # the technician on another address is served meanwhile, TLS and all
    assert h.tech_json(alice, "agents") == []
    line = server.wait_log(r"refused \d+ connections before TLS[^\n]*")
    assert f"refused {FLOOD - UNAUTHENTICATED_CAP} connections" in line
    assert "127.0.0.2" in line and "max_unauthenticated_per_address" in line


async def _bad_enrollment(h: Harness) -> tuple[str, int]:
    """One enrollment with a secret the server never issued: the refusal's message and
    close code."""
    ctx = ssl.create_default_context(cafile=str(h.server_home / "ca.crt"))
    key = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    session = ClientSession(role=m.Role.AGENT, identity="enrolling")
    async with connect(f"wss://127.0.0.1:{h.port}/agent", ssl=ctx) as ws:
        await ws.send(session.enroll(m.Enroll(
            min_version=1, max_version=MAX_VERSION, software="test", hostname="x", os="y",
            secret=secrets.token_bytes(32), public_key=key)), text=True)
        reply = session.receive(await ws.recv(decode=False))
        assert isinstance(reply, m.Error) and reply.code is m.ErrorCode.REFUSED
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    return reply.message, closed.value.rcvd.code


async def test_many_bad_enrollment_tokens_are_refused_and_summarised(
        harness: Harness) -> None:
    h = harness
    h.init_server()
    server = h.start_server()
    messages = [await _bad_enrollment(h) for _ in range(12)]
    assert all(code == CloseCode.ENROLL_REFUSED for _msg, code in messages)
    assert all("not known" in msg for msg, _ in messages[:10])
    assert all("too many enrollment tokens" in msg and "retry in" in msg
               for msg, _ in messages[10:])
    # the person at the keyboard sees why, even with a valid token now
    out = h.run("hw-agent", "enroll", "--home", str(h.root / "A"), h.token(), check=False)
    assert out.returncode != 0 and "too many enrollment tokens" in out.stderr + out.stdout

    def totals() -> tuple[int, int] | None:  # summed over the summary lines so far
        found = re.findall(r"enrollment: (\d+) tokens not accepted .* and (\d+) attempts "
                           r"refused", server.text())
        sums = (sum(int(a) for a, _ in found), sum(int(b) for _, b in found))
        return sums if sums == (10, 3) else None

    wait_until(totals, what="the enrollment summary lines")
    assert not re.search(r"enrollment from \S+ refused", server.text()), "no line per attempt"


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    code = ("import resource; from server.app import raise_descriptor_limit; "
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard)); "
            "raise_descriptor_limit(); print(json.dumps([resource.getrlimit("
            "resource.RLIMIT_NOFILE), hard]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    (soft, hard), was_hard = json.loads(out.stdout)
    assert soft == hard == was_hard
