"""Adding up a fan-out's parts from several nodes (server/fanout.py)."""

from __future__ import annotations

from proto import messages as m
from server.fanout import NODE_UNREACHABLE, combine, unreachable


def test_nodes_add_up_and_an_unreachable_node_names_its_agents() -> None:
    here = m.FanoutDone(re="f1", audience="all", sent=3, ok=2, seconds=0.4,
                        misses=[m.FanoutMiss(agent_id="ag-c", reason="no_answer")])
    there = m.FanoutDone(re="f1", audience="all", sent=2, ok=2, seconds=0.9)
    lost = unreachable("f1", {"ag-z", "ag-b"}, 10.0)
    assert (lost.sent, lost.ok) == (2, 0)
    done = combine("f1", "all", [here, there, lost])
    assert (done.sent, done.ok, done.seconds) == (7, 4, 10.0)
    assert [(x.agent_id, x.reason) for x in done.misses] == [
        ("ag-b", NODE_UNREACHABLE), ("ag-c", "no_answer"), ("ag-z", NODE_UNREACHABLE)]
    assert done.ok + len(done.misses) == done.sent


def test_nobody_to_ping_is_an_empty_answer() -> None:
    done = combine("f2", "customer:Nobody", [unreachable("f2", set(), 1.0)])
    assert (done.sent, done.ok, done.misses) == (0, 0, [])
