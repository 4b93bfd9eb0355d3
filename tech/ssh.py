"""``hw-tech ssh``, ``proxy``, ``ssh-config`` and ``recording``: SSH to an agent through the
server (``docs/protocol.md#tunnels``).

The technician's connection sends ``open_tunnel`` (a signed ``tunnel`` command) and, after
``tunnel_open``, carries the raw SSH stream. ``ssh`` runs asyncssh on one end of a
socketpair whose other end is pumped to that websocket; ``proxy`` pumps stdin/stdout instead,
so stock OpenSSH ``ssh``/``scp``/``sftp`` work as a ``ProxyCommand``. Host-key checking stays
on: the key is the agent's enrolled key, published by the server in ``tunnel_open`` and
written to ``known_hosts`` in the technician home for OpenSSH.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import socket
import stat
import sys
import termios
import tty
from pathlib import Path
from typing import Any

import asyncssh
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from proto import messages as m
from proto.sshalgs import HOST_KEY_ALGS, modern_set

from .client import Profile, TechClient
from .errors import TechError

CHUNK = 256 * 1024
#: SSH channel window: as the agent's, so downloads are not capped by the relay's latency.
SSH_WINDOW = 8 * 1024 * 1024


def ssh_algorithms() -> dict[str, list[str]]:
    """The :func:`asyncssh.connect` options that ask for exactly the modern set the agent
    offers (:mod:`proto.sshalgs`); key exchanges this asyncssh lacks are left out."""
    from asyncssh.kex import get_kex_algs  # no public listing of what this build supports

    return {**modern_set({alg.decode("ascii") for alg in get_kex_algs()}),
            "server_host_key_algs": list(HOST_KEY_ALGS)}


def host_alias(case: str) -> str:
    """The SSH host name of a case's agent (``hw-…`` lower case, as OpenSSH compares)."""
    return case.lower()


async def open_tunnel(profile: Profile, case: str, wait: float = 30.0
                      ) -> tuple[TechClient, m.TunnelOpen]:
    """Authenticate, sign a ``tunnel`` command for the case's agent and open the tunnel.

    Returns the client, whose websocket now carries only the SSH stream, and the reply.

    Raises:
        TechError: refused (no grant, agent offline, ...); the text says what to do.
    """
    client = TechClient(profile)
    await client.__aenter__()
    try:
        agent_id = await client.agent_of(case)
        signed = client.sign(agent_id=agent_id, case=case, action=m.Action.TUNNEL, args={})
        reply = await client.call(m.OpenTunnel(id=client.new_id(), case=case, command=signed,
                                               timeout=wait))
    except BaseException:
        await client.__aexit__(None, None, None)
        raise
    assert isinstance(reply, m.TunnelOpen)
    return client, reply


async def pump_socket(ws: ClientConnection, sock: socket.socket) -> None:
    """Copy between the tunnel websocket and a connected stream socket until either ends."""
    reader, writer = await asyncio.open_connection(sock=sock)
    await _pump(ws, reader, writer)


async def _pump(ws: ClientConnection, reader: asyncio.StreamReader, writer: Any) -> None:
    async def up() -> None:
        with contextlib.suppress(ConnectionClosed, ConnectionError, OSError):
            while data := await reader.read(CHUNK):
                await ws.send(data, text=False)

    async def down() -> None:
        with contextlib.suppress(ConnectionClosed, ConnectionError, OSError):
            while True:
                frame = await ws.recv(decode=False)
                writer.write(frame)
                await writer.drain()

    tasks = {asyncio.create_task(up()), asyncio.create_task(down())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            writer.close()
        await ws.close()


def _client_key(profile: Profile) -> asyncssh.SSHKey:
    return asyncssh.read_private_key(profile.home / "tech.key")


async def connect(profile: Profile, case: str, **options: Any
                  ) -> tuple[asyncssh.SSHClientConnection, asyncio.Task[None]]:
    """An asyncssh client connection to the case's agent through a fresh tunnel
    (``options``: more :func:`asyncssh.connect` options, e.g. ``encryption_algs``)."""
    client, opened = await open_tunnel(profile, case)
    assert client.ws is not None
    ours, theirs = socket.socketpair()
    for end in (ours, theirs):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    pump = asyncio.create_task(pump_socket(client.ws, theirs))
    try:
        conn = await asyncssh.connect(
            host_alias(case), sock=ours, config=None, username=profile.name,
            client_keys=[_client_key(profile)], agent_path=None, preferred_auth="publickey",
            known_hosts=([asyncssh.import_public_key(opened.host_key)], [], []),
            compression_algs=None, keepalive_interval=30,
            **{"window": SSH_WINDOW, **ssh_algorithms(), **options})
    except (asyncssh.Error, OSError) as exc:
        pump.cancel()
        raise TechError(f"the SSH session to {case} failed: {exc}; check the grant "
                        f"(`hw-tech consent-request {case} --scopes shell`)") from None
    return conn, pump


def _stdin_source() -> Any:
    """Pass stdin to a remote command only when it is a pipe or a file (not a terminal)."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return asyncssh.DEVNULL
    return _dup(0, "rb") if stat.S_ISFIFO(mode) or stat.S_ISREG(mode) else asyncssh.DEVNULL


def _dup(fd: int, mode: str) -> Any:
    """A file object on a copy of ``fd``: asyncssh closes redirected files when it is done,
    and our own stdout and stderr must stay open for the last messages."""
    return os.fdopen(os.dup(fd), mode, buffering=0)


async def ssh(profile: Profile, case: str, command: list[str]) -> int:
    """``hw-tech ssh CASE [-- cmd...]``: a command (its exit status), or a shell."""
    conn, pump = await connect(profile, case)
    try:
        if command:
            proc = await conn.create_process(
                shlex.join(command) if len(command) > 1 else command[0], encoding=None,
                stdin=_stdin_source(), stdout=_dup(1, "wb"), stderr=_dup(2, "wb"))
            await proc.wait_closed()
            status = proc.exit_status
            if status is None:  # killed by a signal, or the session was cut
                why = proc.exit_signal[0] if proc.exit_signal else "the session was closed"
                sys.stderr.write(f"hw-tech: the remote command ended without an exit status "
                                 f"({why}: the customer may have revoked consent, or the "
                                 f"grant expired); see `hw-tech case {case}`\n")
                return 255
            return status
        return await _interactive(conn)
    except asyncssh.Error as exc:
        raise TechError(f"the SSH session to {case} ended: {exc.reason} (the customer may "
                        "have revoked consent, or the grant expired)") from None
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await conn.wait_closed()
        pump.cancel()


async def _interactive(conn: asyncssh.SSHClientConnection) -> int:
    if not sys.stdin.isatty():
        raise TechError("an interactive shell needs a terminal; pass a command after `--`")
    size = os.get_terminal_size()
    proc = await conn.create_process(term_type=os.environ.get("TERM", "xterm"),
                                     term_size=(size.columns, size.lines), encoding=None)
    loop = asyncio.get_running_loop()
    saved = termios.tcgetattr(0)

    def on_input() -> None:
        data = os.read(0, CHUNK)
        if data:
            proc.stdin.write(data)
        else:
            proc.stdin.write_eof()
            loop.remove_reader(0)

    def on_resize() -> None:
        cols, lines = os.get_terminal_size()
        proc.change_terminal_size(cols, lines)

    tty.setraw(0)
    loop.add_reader(0, on_input)
    loop.add_signal_handler(signal.SIGWINCH, on_resize)
    try:
        while data := await proc.stdout.read(CHUNK):
            os.write(1, data)
        await proc.wait_closed()
    finally:
        loop.remove_reader(0)
        loop.remove_signal_handler(signal.SIGWINCH)
        termios.tcsetattr(0, termios.TCSADRAIN, saved)
    return proc.exit_status if proc.exit_status is not None else 255


def update_known_hosts(profile: Profile, case: str, host_key: str) -> Path:
    """Record the agent's host key for ``case`` in ``known_hosts`` in the technician home."""
    path = profile.home / "known_hosts"
    alias = host_alias(case)
    lines = []
    with contextlib.suppress(FileNotFoundError):
        lines = [ln for ln in path.read_text(encoding="ascii").splitlines()
                 if ln.split(" ", 1)[0] != alias]
    lines.append(f"{alias} {host_key.strip()}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="ascii")
    tmp.replace(path)
    return path


async def proxy(profile: Profile, case: str) -> int:
    """``hw-tech proxy CASE``: the tunnel on stdin/stdout, for OpenSSH's ``ProxyCommand``."""
    client, opened = await open_tunnel(profile, case)
    assert client.ws is not None
    update_known_hosts(profile, case, opened.host_key)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                 os.fdopen(os.dup(0), "rb", buffering=0))
    wt, wp = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                           os.fdopen(os.dup(1), "wb", buffering=0))
    writer = asyncio.StreamWriter(wt, wp, None, loop)
    await _pump(client.ws, reader, writer)
    return 0


def ssh_config(profile: Profile, executable: str) -> str:
    """A ``Host hw-*`` block for ``~/.ssh/config`` that reaches every case's agent."""
    home = profile.home.resolve()
    return "\n".join([
        "# HelloWord: `ssh hw-20261126-0007` reaches that case's agent through the server",
        "Host hw-* HW-*",
        f"    ProxyCommand {shlex.quote(executable)} --home {shlex.quote(str(home))} "
        "proxy %n",
        f"    User {profile.name}",
        f"    IdentityFile {home / 'tech.key'}",
        f"    CertificateFile {home / 'tech.key-cert.pub'}",
        "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {home / 'known_hosts'}",
        "    StrictHostKeyChecking yes",
        "    ForwardAgent no",
        "    ForwardX11 no",
        "",
    ])


async def recording(profile: Profile, case: str, recording_id: str | None
                    ) -> m.RecordingData:
    async with TechClient(profile) as client:
        reply = await client.call(m.GetRecording(id=client.new_id(), case=case,
                                                 recording=recording_id))
    assert isinstance(reply, m.RecordingData)
    return reply
