"""The agent's SSH endpoint: an asyncssh server on one end of a socketpair per tunnel.

The other end of the socketpair is pumped to and from binary frames on a websocket the agent
dials to the server in mode ``tunnel`` (``docs/protocol.md#tunnels``): no port listens on the
customer's machine, and the SSH session is end to end between the technician's client and
this process. The SSH host key is the agent's identity key (the one the server has on record
since enrollment); the only client key accepted is the technician key that signed the
``tunnel`` command, whose certificate the agent checked against the organisation key it
pinned. Each channel is checked against the grant: shell and exec need ``shell``, SFTP needs
``files``. Revoking consent, the grant expiring or the key being revoked closes the session
within :data:`WATCH_INTERVAL`. Shell output is recorded in asciicast v2, SFTP as a list of
operations; both are kept in the agent home and sent to the server (``docs/security.md``).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import json
import logging
import os
import pty
import secrets
import signal
import socket
import struct
import sys
import termios
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.exceptions import ConnectionClosed

from proto import messages as m
from proto.gate import Allowed, Refusal
from proto.sshalgs import modern_set

from .connection import Link
from .consent import Grant
from .errors import AgentError

log = logging.getLogger("hw.agent.tunnel")

#: How often an open session re-checks its grant (revocation also cancels it at once).
WATCH_INTERVAL = 0.25
#: Bytes read from the SSH side per websocket frame.
CHUNK = 256 * 1024
#: Tunnel sessions one agent serves at once; more are refused until one closes.
MAX_SESSIONS = 8
#: SSH channel window (bytes in flight per channel): the relay adds buffering between the
#: ends, so the default 2 MiB window would cap throughput below what the path carries.
SSH_WINDOW = 8 * 1024 * 1024
#: Room left in a recording for its closing marker.
_MARGIN = 512

def ssh_algorithms() -> dict[str, list[str]]:
    """The :func:`asyncssh.run_server` options that offer exactly the modern set of
    :mod:`proto.sshalgs` (the host key is the agent's Ed25519 identity, its only one)."""
    from asyncssh.kex import get_kex_algs  # no public listing of what this build supports

    return modern_set({alg.decode("ascii") for alg in get_kex_algs()})


def now_utc() -> datetime:
    return datetime.now(UTC)


# -- recordings ---------------------------------------------------------------------------


@dataclass
class Recorder:
    """One channel's record: asciicast v2 lines (shell) or JSON lines (SFTP operations)."""

    kind: m.RecordingKind
    case: str
    tech: str
    title: str
    started_at: datetime = field(default_factory=now_utc)
    lines: list[bytes] = field(default_factory=list)
    size: int = 0
    truncated: bool = False
    _t0: float = field(default_factory=time.monotonic)
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))

    def header(self, width: int, height: int, term: str) -> None:
        self._add({"version": 2, "width": width or 80, "height": height or 24,
                   "timestamp": int(self.started_at.timestamp()), "title": self.title,
                   "env": {"TERM": term or "", "SHELL": os.environ.get("SHELL", "/bin/sh")}})

    def _add(self, value: Any) -> None:
        if self.truncated:
            return
        line = json.dumps(value, ensure_ascii=False).encode() + b"\n"
        if self.size + len(line) > m.MAX_RECORDING - _MARGIN:
            self.truncated = True
            note = (f"\r\n[recording truncated: past {m.MAX_RECORDING // 1024} KiB nothing "
                    "more was recorded]\r\n")
            line = json.dumps([self._elapsed(), "o", note] if self.kind is
                              m.RecordingKind.SHELL else {"op": "truncated"}).encode() + b"\n"
        self.lines.append(line)
        self.size += len(line)

    def _elapsed(self) -> float:
        return round(time.monotonic() - self._t0, 6)

    def output(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            self._add([self._elapsed(), "o", text])

    def resize(self, width: int, height: int) -> None:
        self._add([self._elapsed(), "r", f"{width}x{height}"])

    def op(self, op: str, path: bytes, **extra: Any) -> None:
        self._add({"t": self._elapsed(), "op": op,
                   "path": path.decode("utf-8", "replace"), **extra})

    def message(self, rec_id: str, tunnel: str | None = None) -> m.Recording:
        return m.Recording(id=rec_id, case=self.case, tech=self.tech, kind=self.kind,
                           started_at=self.started_at, ended_at=now_utc(),
                           data=b"".join(self.lines), truncated=self.truncated,
                           tunnel=tunnel)


# -- shell and exec -----------------------------------------------------------------------


_ON_TTY = ("import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0);"
           " os.execvp(sys.argv[1], sys.argv[1:])")
"""Run a shell in a new session whose controlling terminal is the pty on its stdin (a tiny
exec wrapper: event loops differ in when they apply ``start_new_session``/``preexec_fn``)."""


def _set_winsize(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height or 24, width or 80, 0, 0))


class PtyMaster:
    """Non-blocking reads and writes on a pty master with ``add_reader``/``add_writer``
    (asyncio and uvloop alike; uvloop's pipe transports do not handle ptys)."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.loop = asyncio.get_running_loop()
        self._pending = b""

    async def _ready(self, writing: bool) -> None:
        future: asyncio.Future[None] = self.loop.create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        (self.loop.add_writer if writing else self.loop.add_reader)(self.fd, wake)
        try:
            await future
        finally:
            (self.loop.remove_writer if writing else self.loop.remove_reader)(self.fd)

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; ``b""`` once the other side is gone (EIO)."""
        while True:
            try:
                return os.read(self.fd, n)
            except BlockingIOError:
                await self._ready(False)
            except OSError:
                return b""

    def write(self, data: bytes) -> None:
        """Queue ``data``; :meth:`drain` writes it (the StreamWriter calling convention)."""
        self._pending += data

    async def drain(self) -> None:
        view = memoryview(self._pending)
        self._pending = b""
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                await self._ready(True)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


async def _copy_out(src: Any, dst: Any, rec: Recorder | None) -> None:
    while True:
        try:
            data = await src.read(CHUNK)
        except OSError:  # EIO on the pty master once the last child closed it
            return
        if not data:
            return
        if rec is not None:
            rec.output(data)
        dst.write(data)
        await dst.drain()


class Shells:
    """Runs shell and exec channels as the agent's user, recording what they print."""

    def __init__(self, host: TunnelSession) -> None:
        self.host = host
        self.children: set[int] = set()

    async def __call__(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        host = self.host
        if process.subsystem:
            process.stderr.write(f"subsystem {process.subsystem!r} is not offered here; "
                                 "use a shell, a command or sftp\n".encode())
            process.exit(1)
            return
        if m.Scope.SHELL not in host.scopes:
            host.log("refused", f"{host.tech} asked for a shell on {host.case}: the customer "
                     "granted files only")
            process.stderr.write(b"refused: the customer has not granted the shell scope on "
                                 b"this case; ask with `hw-tech consent-request CASE --scopes "
                                 b"shell`\n")
            process.exit(1)
            return
        command = process.command
        term = process.term_type
        width, height, _pw, _ph = process.term_size
        shell = os.environ.get("SHELL") or "/bin/sh"
        argv = [shell, "-c", command] if command else [shell, "-l"] if term else [shell]
        what = f"command {command[:200]!r}" if command else "an interactive shell"
        rec = Recorder(m.RecordingKind.SHELL, host.case, host.tech,
                       title=f"{host.tech} on {host.case}: {what}")
        rec.header(width, height, term or "")
        host.log("shell", f"{host.tech} started {what} on {host.case}")
        env = dict(os.environ, TERM=term or os.environ.get("TERM", "dumb"))
        if term:
            master, slave = pty.openpty()
            _set_winsize(slave, width, height)
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _ON_TTY, *argv, stdin=slave, stdout=slave,
                stderr=slave, env=env, cwd=Path.home())
            os.close(slave)
            pty_master = PtyMaster(master)
            reader: Any = pty_master
            writer: Any = pty_master
            err_reader = None
        else:
            child = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, cwd=Path.home(),
                start_new_session=True)
            assert child.stdin and child.stdout and child.stderr
            reader, writer, err_reader = child.stdout, child.stdin, child.stderr
            master = -1
        self.children.add(child.pid)
        outs = [asyncio.create_task(_copy_out(reader, process.stdout, rec))]
        if err_reader is not None:
            outs.append(asyncio.create_task(_copy_out(err_reader, process.stderr, rec)))
        feeder = asyncio.create_task(self._feed(process, writer, master, rec, bool(term)))
        try:
            status = await child.wait()
            await asyncio.wait(outs, timeout=2.0)
        finally:
            for task in (*outs, feeder):
                task.cancel()
            self.kill(child.pid)
            self.children.discard(child.pid)
            with contextlib.suppress(Exception):
                writer.close()
            await host.finish(rec)
        code = status if status >= 0 else 128 - status
        host.log("shell-done", f"{what} on {host.case} ended with status {code}")
        process.exit(code)

    async def _feed(self, process: asyncssh.SSHServerProcess[bytes],
                    writer: Any, master: int, rec: Recorder,
                    tty: bool) -> None:
        while True:
            try:
                data = await process.stdin.read(CHUNK)
            except asyncssh.TerminalSizeChanged as change:
                if master >= 0:
                    _set_winsize(master, change.width, change.height)
                rec.resize(change.width, change.height)
                continue
            except (asyncssh.BreakReceived, asyncssh.SignalReceived):
                continue
            except (asyncssh.Error, OSError):
                return
            if not data:
                if not tty:
                    with contextlib.suppress(Exception):
                        writer.close()
                return
            try:
                writer.write(data)
                await writer.drain()
            except (OSError, ConnectionError):
                return

    @staticmethod
    def kill(pid: int) -> None:
        """End a child's whole process group (HUP, then KILL)."""
        for sig in (signal.SIGHUP, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)


# -- SFTP ---------------------------------------------------------------------------------


def _sftp_factory(host: TunnelSession) -> Callable[[Any], asyncssh.SFTPServer]:
    class RecordedSFTP(asyncssh.SFTPServer):
        """The stock SFTP server rooted at the agent user's home, noting each operation."""

        def __init__(self, chan: Any) -> None:
            super().__init__(chan, chroot=os.fsencode(Path.home()))
            self.rec = Recorder(m.RecordingKind.SFTP, host.case, host.tech,
                                title=f"{host.tech} on {host.case}: sftp")
            self.sizes: dict[int, list[Any]] = {}
            host.log("sftp", f"{host.tech} opened file transfer (sftp) on {host.case}")

        def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> Any:
            obj = super().open(path, pflags, attrs)
            writing = bool(pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND))
            self.sizes[id(obj)] = [path, "write" if writing else "read", 0]
            return obj

        def read(self, file_obj: object, offset: int, size: int) -> Any:
            data = super().read(file_obj, offset, size)
            entry = self.sizes.get(id(file_obj))
            if entry is not None and isinstance(data, bytes):
                entry[2] += len(data)
            return data

        def write(self, file_obj: object, offset: int, data: bytes) -> Any:
            entry = self.sizes.get(id(file_obj))
            if entry is not None:
                entry[2] += len(data)
            return super().write(file_obj, offset, data)

        def close(self, file_obj: object) -> Any:
            entry = self.sizes.pop(id(file_obj), None)
            if entry is not None:
                self.rec.op(entry[1], entry[0], bytes=entry[2])
            return super().close(file_obj)

        def remove(self, path: bytes) -> Any:
            self.rec.op("remove", path)
            return super().remove(path)

        def rename(self, oldpath: bytes, newpath: bytes) -> Any:
            self.rec.op("rename", oldpath, to=newpath.decode("utf-8", "replace"))
            return super().rename(oldpath, newpath)

        def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> Any:
            self.rec.op("mkdir", path)
            return super().mkdir(path, attrs)

        def rmdir(self, path: bytes) -> Any:
            self.rec.op("rmdir", path)
            return super().rmdir(path)

        def exit(self) -> None:
            super().exit()
            host.spawn(host.finish(self.rec))

    return RecordedSFTP


# -- the SSH server ------------------------------------------------------------------------


class _Auth(asyncssh.SSHServer):
    """Public-key auth for exactly one user (the technician) with exactly one key."""

    def __init__(self, tech: str, fingerprint: str) -> None:
        self.tech = tech
        self.fingerprint = fingerprint

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == self.tech and key.get_fingerprint("sha256") == self.fingerprint


@dataclass
class TunnelParams:
    """What one tunnel session needs from the agent around it."""

    link: Link
    host_key: Ed25519PrivateKey
    case: str
    tech: str
    fingerprint: str
    scopes: frozenset[m.Scope]
    still_allowed: Callable[[], str | None]
    log: Callable[[str, str], None]
    deliver: Callable[[m.Recording], Awaitable[None]]
    recordings_dir: Path
    #: the tunnel's id, named in its recordings (None: the server speaks protocol 2)
    tunnel: str | None = None


class TunnelSession:
    """One SSH session over one tunnel websocket; :meth:`run` returns why it ended."""

    def __init__(self, params: TunnelParams) -> None:
        self.p = params
        self.case, self.tech, self.scopes = params.case, params.tech, params.scopes
        self.shells = Shells(self)
        self.opened_at = now_utc()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._finishing: set[asyncio.Task[Any]] = set()

    def log(self, event: str, detail: str) -> None:
        self.p.log(event, detail)

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def finish(self, rec: Recorder) -> None:
        """Keep a channel's recording in the agent home and send it with the case."""
        if not rec.lines:
            return
        rec_id = "rec-" + secrets.token_hex(8)
        msg = rec.message(rec_id, self.p.tunnel)
        ext = "cast" if rec.kind is m.RecordingKind.SHELL else "sftp.jsonl"
        path = self.p.recordings_dir / f"{rec_id}.{ext}"
        try:
            self.p.recordings_dir.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(msg.data)
        except OSError as exc:
            log.warning("cannot keep recording %s locally: %s", rec_id, exc)
        self.log("recording", f"{rec.kind.value} recording {rec_id} of {self.tech} on "
                 f"{self.case} ({len(msg.data)} bytes{', truncated' if rec.truncated else ''})"
                 f" kept at {path} and sent to the support server")
        await self.p.deliver(msg)

    async def _start(self, sock: socket.socket, key: asyncssh.SSHKey
                     ) -> asyncssh.SSHServerConnection:
        return await asyncssh.run_server(
            sock, config=None, server_factory=lambda: _Auth(self.tech, self.p.fingerprint),
            server_host_keys=[key], process_factory=self.shells, encoding=None,
            line_editor=False,  # the remote pty does the editing, as with OpenSSH
            sftp_factory=_sftp_factory(self) if m.Scope.FILES in self.scopes else None,
            allow_scp=False, agent_forwarding=False, x11_forwarding=False,
            login_timeout=30, keepalive_interval=0, window=SSH_WINDOW,
            compression_algs=None, **ssh_algorithms())

    async def run(self) -> str:
        """Serve SSH until the technician leaves, the grant ends or the task is cancelled."""
        ours, theirs = socket.socketpair()
        for end in (ours, theirs):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        reader, writer = await asyncio.open_connection(sock=theirs)
        ws = self.p.link.ws

        async def up() -> None:  # technician -> SSH server
            try:
                while True:
                    frame = await ws.recv(decode=False)
                    if not isinstance(frame, bytes):
                        return
                    writer.write(frame)
                    await writer.drain()
            except (ConnectionClosed, ConnectionError, OSError):
                return

        async def down() -> None:  # SSH server -> technician
            try:
                while data := await reader.read(CHUNK):
                    await ws.send(data, text=False)
            except (ConnectionClosed, ConnectionError, OSError):
                return

        async def watch() -> str:
            while True:
                await asyncio.sleep(WATCH_INTERVAL)
                reason = self.p.still_allowed()
                if reason:
                    return reason

        key = asyncssh.import_private_key(self.p.host_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        pumps = {asyncio.create_task(up()), asyncio.create_task(down())}
        watcher = asyncio.create_task(watch())
        conn: asyncssh.SSHServerConnection | None = None
        reason = "the technician closed the session"
        try:
            server = asyncio.create_task(self._start(ours, key))
            done, _ = await asyncio.wait({server, watcher, *pumps},
                                         return_when=asyncio.FIRST_COMPLETED)
            if server in done and server.exception() is None:
                conn = server.result()
                conn_closed = asyncio.create_task(conn.wait_closed())
                done, _ = await asyncio.wait({conn_closed, watcher, *pumps},
                                             return_when=asyncio.FIRST_COMPLETED)
                conn_closed.cancel()
            elif server in done:
                reason = f"the SSH handshake failed ({type(server.exception()).__name__})"
            else:
                server.cancel()
            if watcher in done:
                reason = watcher.result()
            return reason
        finally:
            watcher.cancel()
            for pid in list(self.shells.children):
                Shells.kill(pid)
            if conn is not None:
                conn.close()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        await conn.wait_closed()
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            if self._finishing:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await asyncio.gather(*self._finishing, return_exceptions=True)
            writer.close()
            ours.close()
            with contextlib.suppress(Exception):
                await ws.close(1000, "session closed by the agent")


# -- the agent's side of a tunnel request -------------------------------------------------


@dataclass(frozen=True)
class TunnelHost:
    """What the agent gives its tunnels: narrow callbacks, never the agent itself."""

    host_key: Ed25519PrivateKey
    #: the consent gate for ``tunnel`` now: ``(case, tech, fingerprint)`` -> decision
    gate: Callable[[str, str, str], Allowed[Grant] | Refusal]
    #: whether the operator revoked this technician key (the latest ``revocations``)
    key_revoked: Callable[[str], bool]
    #: why the organisation's signed revocation list is too old to act on, or ``None``
    revocations_stale: Callable[[], str | None]
    #: whether the customer is revoking consent on this case right now
    revoking: Callable[[str], bool]
    #: dial the tunnel connection for this request (raises :class:`AgentError`)
    dial: Callable[[m.Request], Awaitable[Link]]
    #: an entry in the customer's local log: ``(event, detail)``
    log: Callable[[str, str], None]
    #: a line in the customer's terminal
    say: Callable[[str], None]
    #: send a recording with the case, through the durable outbox
    deliver: Callable[[m.Recording], Awaitable[None]]
    recordings_dir: Path


class Tunnels:
    """Open tunnel sessions of one agent (shown by ``hw-agent consent status``)."""

    def __init__(self, host: TunnelHost) -> None:
        self.host = host
        self.sessions: dict[str, dict[str, str]] = {}

    @property
    def full(self) -> bool:
        """:data:`MAX_SESSIONS` sessions are open: a new one is refused (busy)."""
        return len(self.sessions) >= MAX_SESSIONS

    def _still_allowed(self, case: str, tech: str, fingerprint: str,
                       scopes: frozenset[m.Scope]) -> str | None:
        """Why the session must end now, or ``None`` while the gate still allows it."""
        if self.host.key_revoked(fingerprint):
            return "the technician's key was revoked"
        if (stale := self.host.revocations_stale()) is not None:
            return f"the organisation's revocation list is out of date ({stale})"
        decision = self.host.gate(case, tech, fingerprint)
        if isinstance(decision, Refusal) or not scopes <= decision.scopes:
            return "the customer's grant was revoked or expired"
        return None

    async def serve(self, req: m.Request, tech: str, fingerprint: str,
                    scopes: frozenset[m.Scope]) -> m.Result:
        """Dial the tunnel connection and serve SSH until the session ends.

        The caller has verified the command and asked the gate (``scopes`` are the tunnel
        scopes it allows) and checked :attr:`full`.
        """
        h = self.host
        try:
            link = await h.dial(req)
        except AgentError as exc:
            return m.Result(id="rs-" + secrets.token_hex(8), re=req.id, case=req.case,
                            action=req.action, ok=False, error_code=m.ErrorCode.AGENT_OFFLINE,
                            error=f"the agent could not open the tunnel connection: {exc}")
        names = ", ".join(sorted(s.value for s in scopes))
        since = now_utc()
        self.sessions[req.id] = {"case": req.case, "tech": tech, "scopes": names,
                                 "since": since.isoformat()}
        h.log("session-open", f"{tech} opened a remote session ({names}) on {req.case}")
        h.say(f"HelloWord support: technician {tech} opened a remote session ({names}) on "
              f"case {req.case}; end it with `hw-agent consent revoke --case {req.case}`")
        reason = "the session ended"
        try:
            reason = await TunnelSession(TunnelParams(
                link=link, host_key=h.host_key, case=req.case, tech=tech,
                fingerprint=fingerprint, scopes=scopes,
                still_allowed=lambda: self._still_allowed(req.case, tech, fingerprint, scopes),
                log=h.log, deliver=h.deliver, recordings_dir=h.recordings_dir,
                tunnel=req.id if (link.session.version or 0) >= 3 else None)).run()
        except asyncio.CancelledError:
            reason = ("the customer revoked consent" if h.revoking(req.case)
                      else "the agent is stopping")
            raise
        finally:
            del self.sessions[req.id]
            h.log("session-closed", f"remote session of {tech} on {req.case} closed: {reason}")
            h.say(f"HelloWord support: the remote session of {tech} on case {req.case} is "
                  f"closed ({reason})")
        return m.Result(id="rs-" + secrets.token_hex(8), re=req.id, case=req.case,
                        action=req.action, ok=True, error=f"session closed: {reason}"[:4000])
