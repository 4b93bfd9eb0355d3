"""Fan-out bookkeeping that needs no connection: places, adding up nodes, answer size."""

from __future__ import annotations

import pytest

from proto import MAX_FRAME_SIZE, codec
from proto import messages as m
from server.bus import MAX_PAYLOAD, Forwarded, _encode
from server.fanout import (
    MAX_RUNNING,
    NODE_BUSY,
    NODE_UNREACHABLE,
    FanoutBusy,
    Fanouts,
    combine,
    unreachable,
)


def test_nodes_add_up_and_an_unreachable_node_names_its_agents() -> None:
    here = m.FanoutDone(re="f1", audience="all", sent=3, ok=2, seconds=0.4,
                        misses=[m.FanoutMiss(agent_id="ag-c", reason="no_answer")],
                        counts={"no_answer": 1})
    there = m.FanoutDone(re="f1", audience="all", sent=2, ok=2, seconds=0.9)
    lost = unreachable("f1", {"ag-z", "ag-b"}, 10.0)
    busy = unreachable("f1", {"ag-q"}, 10.0, NODE_BUSY)
    assert (lost.sent, lost.ok, lost.counts) == (2, 0, {NODE_UNREACHABLE: 2})
    done = combine("f1", "all", [here, there, lost, busy])
    assert (done.sent, done.ok, done.seconds) == (8, 4, 10.0)
    assert [(x.agent_id, x.reason) for x in done.misses] == [
        ("ag-b", NODE_UNREACHABLE), ("ag-c", "no_answer"), ("ag-q", NODE_BUSY),
        ("ag-z", NODE_UNREACHABLE)]
    assert done.counts == {"no_answer": 1, NODE_UNREACHABLE: 2, NODE_BUSY: 1}
    assert done.ok + sum(done.counts.values()) == done.sent and done.unlisted == 0


def test_nobody_to_ping_is_an_empty_answer() -> None:
    done = combine("f2", "customer:Nobody", [unreachable("f2", set(), 1.0)])
    assert (done.sent, done.ok, done.misses, done.counts) == (0, 0, [], {})


def test_the_worst_answer_still_fits_one_frame_and_one_bus_message() -> None:
    """Two whole nodes of 25k agents with the longest ids unreachable: the answer names as
    many as fit and counts the rest."""
    ids = [f"ag-{i:061d}" for i in range(50_000)]  # 64 characters, the longest Id
    part_a = unreachable("f3", ids[:25_000], 10.0)
    part_b = unreachable("f3", ids[25_000:], 10.0, NODE_BUSY)
    assert len(_encode(Forwarded(fanout=part_a))) <= MAX_PAYLOAD
    done = combine("f3", "all", [part_a, part_b])
    assert len(codec.encode(done)) <= MAX_FRAME_SIZE
    assert done.counts == {NODE_UNREACHABLE: 25_000, NODE_BUSY: 25_000}
    assert 0 < len(done.misses) < 50_000
    assert len(done.misses) + done.unlisted == 50_000
    assert done.misses == sorted(done.misses, key=lambda x: x.agent_id)


def test_places_are_taken_at_once_and_ids_are_never_shared() -> None:
    fanouts = Fanouts()
    for k in range(MAX_RUNNING):
        fanouts.reserve(f"fo-{k}")
    with pytest.raises(FanoutBusy, match="retry when one has finished"):
        fanouts.reserve("fo-x")
    fanouts.release("fo-0")
    with pytest.raises(FanoutBusy):
        fanouts.reserve("fo-1")  # in use
    fanouts.reserve("fo-x")
