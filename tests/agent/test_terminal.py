"""The customer's terminal, on a real pseudo-terminal: questions answered here or
elsewhere, stale keystrokes, and log lines that never land inside a question."""

from __future__ import annotations

import asyncio
import logging
import os
import pty
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import pytest

from agent.consent import ConsentStore, Policy
from agent.pending import Ask, Pending
from agent.terminal import Terminal
from proto import messages as m

CASE = "HW-20261206-0001"


@dataclass
class Screen:
    """The other side of the pty: what the customer sees and types."""

    master: int
    terminal: Terminal
    pending: Pending
    store: ConsentStore
    seen: str = ""
    read_to: int = 0  # what earlier expects matched: each expect looks past it

    async def expect(self, text: str) -> None:
        loop = asyncio.get_running_loop()
        while text not in self.seen[self.read_to:]:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self.master, lambda f=ready: f.done() or f.set_result(None))
            try:
                await asyncio.wait_for(ready, 20)
            finally:
                loop.remove_reader(self.master)
            self.seen += os.read(self.master, 4096).decode(errors="replace")
        self.read_to = self.seen.index(text, self.read_to) + len(text)

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def ask(self, wait: float = 60.0) -> Ask:
        return self.pending.ask_consent(
            case=CASE, tech="alice", fingerprint="SHA256:k", what="alice asks for diagnostics",
            scopes=[m.Scope.DIAGNOSTICS], duration=timedelta(minutes=20), wait=wait)


@pytest.fixture
async def screen(tmp_path: Path) -> AsyncIterator[Screen]:
    master, slave = pty.openpty()
    files: list[TextIO] = [os.fdopen(os.dup(slave), mode, encoding="utf-8")
                           for mode in ("r", "w", "w")]
    os.close(slave)
    store = ConsentStore(tmp_path / "agent.db", agent_id="ag-test")
    term = Terminal(stdin=files[0], stdout=files[1], stderr=files[2])
    yield Screen(master, term, Pending(store, Policy(), lambda: datetime.now(UTC)), store)
    store.close()
    for f in files:
        f.close()
    os.close(master)


async def test_an_answer_typed_here_grants(screen: Screen) -> None:
    ask = screen.ask()
    question = asyncio.ensure_future(screen.terminal.ask_consent(screen.pending, ask))
    await screen.expect("allow diagnostics? [y/N] ")
    screen.type("y")
    await question
    answer = await ask.answered()
    assert answer.via == "terminal" and answer.grant is not None
    await screen.expect("-> granted diagnostics until ")
    assert len(screen.store.all()) == 1


async def test_answered_elsewhere_the_question_stops_and_grants_nothing(
        screen: Screen) -> None:
    ask = screen.ask()
    question = asyncio.ensure_future(screen.terminal.ask_consent(screen.pending, ask))
    await screen.expect("allow diagnostics? [y/N] ")
    grant = screen.pending.grant(ask, scopes=[m.Scope.DIAGNOSTICS],
                                 duration=timedelta(minutes=5), via="control")
    assert grant is not None
    await question  # stops waiting for input by itself
    await screen.expect("granted diagnostics (answered with hw-agent consent); nothing more "
                        "to answer here")
    # The customer types the late answer: it answers nothing and the next question
    # does not take it either.
    screen.type("y")
    nxt = screen.ask()
    question = asyncio.ensure_future(screen.terminal.ask_consent(screen.pending, nxt))
    await screen.expect("allow diagnostics? [y/N] ")
    screen.type("n")
    await question
    assert (await nxt.answered()).yes is False
    assert [g.receipt_id for g in screen.store.all()] == [grant.receipt_id]


async def test_log_lines_wait_until_the_question_is_answered(screen: Screen) -> None:
    logger = logging.getLogger("hw.test.terminal")
    logger.propagate = False
    logger.addHandler(screen.terminal.log_handler())
    logger.setLevel(logging.INFO)
    try:
        ask = screen.ask()
        question = asyncio.ensure_future(screen.terminal.ask_consent(screen.pending, ask))
        await screen.expect("allow diagnostics? [y/N] ")
        logger.info("a technician's log line")
        screen.terminal.say("a line the agent says")
        screen.type("n")
        await question
        # In this order, each after the last (expect reads on from its previous match):
        await screen.expect("-> declined")
        await screen.expect("a technician's log line")
        await screen.expect("a line the agent says")
        logger.info("after the question")
        await screen.expect("after the question")
        line = screen.seen.split("after the question")[0].splitlines()[-1]
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ([+-]\d\d:\d\d|UTC) hw\.test", line), \
            "log times carry their offset"
    finally:
        logger.handlers.clear()


async def test_a_fix_plan_approved_elsewhere(screen: Screen) -> None:
    plan = m.FixPlanInfo(fixer="disk.cleanup", summary="move 3 files", reversible=True,
                         changes=["move /tmp/junk.bin"])
    ask = screen.pending.ask_fix(case=CASE, tech="alice", plan=plan, what="alice proposes",
                                 wait=60)
    question = asyncio.ensure_future(screen.terminal.ask_fix(screen.pending, ask))
    await screen.expect("apply this fix? [y/N] ")
    assert "move /tmp/junk.bin" in screen.seen
    assert screen.pending.decide(ask, approve=True, via="control")
    await question
    await screen.expect("approved (answered with hw-agent consent); nothing more to answer")


async def test_a_question_that_times_out_says_so(screen: Screen) -> None:
    ask = screen.ask(wait=0.5)
    question = asyncio.ensure_future(screen.terminal.ask_consent(screen.pending, ask))
    await screen.expect("allow diagnostics? [y/N] ")
    answer = await screen.pending.wait(ask)
    await question
    assert answer.via == "timeout"
    await screen.expect("no answer in time: declined")
    assert screen.store.all() == []
