"""The customer's terminal of ``hw-agent run``: our lines, our log records, and questions.

One :class:`Terminal` owns what the customer sees in the window they started the agent in:

- lines the agent says (:meth:`Terminal.say`) and its log records
  (:meth:`Terminal.log_handler`) are written at once — except while a question is on the
  screen: then they are held and written after it, so nothing interleaves a prompt;
- a question (:meth:`Terminal.ask_consent`, :meth:`Terminal.ask_fix`) shows one
  :class:`~agent.pending.Ask` and reads the answer from the terminal without blocking the
  agent. If the ask is answered first on another channel (``hw-agent consent grant`` or
  ``approve`` on the control socket), the question stops waiting for input, says so, and
  records nothing (``docs/security.md#consent``). Input typed before a question is shown
  is discarded, so a stale keystroke never answers a new question.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import termios
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TextIO

from proto import messages as m
from proto.timefmt import human_time

from .pending import Ask, Pending

YES = ("y", "yes", "是")


class Terminal:
    """Output and questions on the agent's terminal (stdin must be a terminal)."""

    def __init__(self, *, stdin: TextIO | None = None, stdout: TextIO | None = None,
                 stderr: TextIO | None = None) -> None:
        self._stdin = stdin or sys.stdin
        self._out = stdout or sys.stdout
        self._err = stderr or sys.stderr
        self._held: list[tuple[TextIO, str]] | None = None
        # Log records come from any thread (probe and executor threads log too): holding,
        # appending and releasing take this lock, so no line is lost in the hand-over.
        self._held_lock = threading.Lock()
        self._questions = asyncio.Lock()

    # -- output ------------------------------------------------------------------------

    def say(self, line: str) -> None:
        """A line for the customer (held while a question is shown)."""
        self._write(self._out, line + "\n")

    def log_line(self, line: str) -> None:
        """A formatted log record, on stderr (held while a question is shown)."""
        self._write(self._err, line + "\n")

    def _write(self, stream: TextIO, text: str) -> None:
        with self._held_lock:
            if self._held is not None:
                self._held.append((stream, text))
                return
            stream.write(text)
            stream.flush()

    def log_handler(self) -> logging.Handler:
        """A logging handler writing one line per record here (held while a question is
        shown), times in local time with their offset."""
        return _Handler(self)

    @contextlib.asynccontextmanager
    async def _question(self) -> AsyncIterator[None]:
        """One question at a time; other output waits until it is answered."""
        async with self._questions:
            with self._held_lock:
                self._held = []
            try:
                yield
            finally:
                with self._held_lock:
                    held, self._held = self._held, None
                    for stream, text in held:  # in order, before any later line
                        stream.write(text)
                        stream.flush()

    def _show(self, text: str) -> None:
        """Write part of the question itself (never held)."""
        self._out.write(text)
        self._out.flush()

    # -- input -------------------------------------------------------------------------

    async def _readline(self, prompt: str) -> str:
        """Show ``prompt`` and return the line typed (``""`` at end of input); cancellable."""
        self._show(prompt)
        if sys.platform == "win32":  # no add_reader on a console: a thread, not cancellable
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(None, self._stdin.readline)
            except (EOFError, OSError):
                return ""
        return await _read_line(self._stdin.fileno())

    def _discard_typed_ahead(self) -> None:
        if sys.platform != "win32":
            with contextlib.suppress(OSError, termios.error):
                termios.tcflush(self._stdin.fileno(), termios.TCIFLUSH)

    async def _answer(self, ask: Ask, prompt: str) -> str | None:
        """The line typed, or ``None`` if ``ask`` was answered elsewhere first."""
        reading = asyncio.ensure_future(self._readline(prompt))
        answered = asyncio.ensure_future(ask.answered())
        try:
            await asyncio.wait({reading, answered}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            answered.cancel()
            if not reading.done():
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
        if ask.answer is not None or not reading.done() or reading.cancelled():
            return None
        return reading.result()

    def _elsewhere(self, ask: Ask) -> None:
        answer = ask.answer
        what = answer.describe() if answer is not None else "the request was withdrawn"
        self._show(f"\n  -> {what}; nothing more to answer here.\n")

    # -- questions ---------------------------------------------------------------------

    async def ask_consent(self, pending: Pending, ask: Ask) -> None:
        """Ask yes/no per scope; grant the scopes answered yes (``via="terminal"``), or
        decline — unless another channel answered first."""
        async with self._question():
            if ask.answer is not None:
                return
            self._discard_typed_ahead()
            self._show(f"\nHelloWord support: {ask.what}.\n"
                       f"  (answer here, or with `hw-agent consent grant|deny --case "
                       f"{ask.case}`; no answer by {human_time(ask.deadline)} is a no)\n")
            allowed: list[m.Scope] = []
            for scope in ask.scopes:
                line = await self._answer(ask, f"  allow {scope.value}? [y/N] ")
                if line is None:
                    self._elsewhere(ask)
                    return
                if line.strip().lower() in YES:
                    allowed.append(scope)
            if ask.answer is not None:
                self._elsewhere(ask)
            elif allowed:
                grant = pending.grant(ask, scopes=allowed, duration=ask.duration,
                                      via="terminal")
                if grant is not None:
                    self._show(f"  -> granted {', '.join(s.value for s in allowed)} until "
                               f"{human_time(grant.expires_at)}\n")
            else:
                pending.decline(ask, via="terminal")
                self._show("  -> declined\n")

    async def ask_fix(self, pending: Pending, ask: Ask) -> None:
        """Show the plan and ask to apply it (``via="terminal"``) — unless another channel
        answered first."""
        plan = ask.plan
        assert plan is not None
        async with self._question():
            if ask.answer is not None:
                return
            self._discard_typed_ahead()
            changes = "".join(f"    - {change}\n" for change in plan.changes[:50])
            more = (f"    ... and {len(plan.changes) - 50} more\n"
                    if len(plan.changes) > 50 else "")
            self._show(f"\nHelloWord support: {ask.what}\n{changes}{more}"
                       f"  (answer here, or with `hw-agent consent approve|decline --case "
                       f"{ask.case}`; no answer by {human_time(ask.deadline)} is a no)\n")
            line = await self._answer(ask, "  apply this fix? [y/N] ")
            if line is None:
                self._elsewhere(ask)
                return
            yes = line.strip().lower() in YES
            if pending.decide(ask, approve=yes, via="terminal"):
                self._show("  -> approved\n" if yes else "  -> declined\n")
            else:
                self._elsewhere(ask)


async def _read_line(fd: int) -> str:
    """One line from ``fd`` once it is readable, without a thread (cancellable)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    buf = bytearray()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        buf.extend(data)
        if (not data or b"\n" in buf) and not done.done():
            done.set_result(buf.split(b"\n", 1)[0].decode("utf-8", "replace"))

    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)


class _Handler(logging.Handler):
    """Log records to the terminal's stderr, through :class:`Terminal` (held by questions)."""

    def __init__(self, terminal: Terminal) -> None:
        super().__init__()
        self.terminal = terminal
        self.setFormatter(LocalFormatter("%(asctime)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # logging's contract: a bad record never crashes the caller
            self.handleError(record)
            return
        self.terminal.log_line(text)


class LocalFormatter(logging.Formatter):
    """``%(asctime)s`` as :func:`proto.timefmt.human_time` (local time and its offset)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return human_time(datetime.fromtimestamp(record.created, UTC), seconds=True)
