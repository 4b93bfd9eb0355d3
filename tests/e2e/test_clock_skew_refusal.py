"""A real agent whose clock is 7 min 12 s behind (issue 13, break 6): the refusal the
technician gets says which clock is off, by how much, and how to correct it."""

from __future__ import annotations

import pytest

from tests.harness import Harness

pytestmark = pytest.mark.e2e


def test_a_refusal_for_time_names_the_clock_that_is_off(harness: Harness) -> None:
    h = harness
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    h.start_agent(home, env={"HW_PLUGINS": "skewclock", "HW_CLOCK_OFFSET": "-432"})
    case = h.help(home).splitlines()[0]
    alice = h.add_tech("alice")
    h.grant(home, case, "alice")
    p = h.run("hw-tech", "--home", str(alice), "diag", case, "--probes", "cpu", check=False)
    assert p.returncode == 1
    # The technician's certificate was issued a moment ago, so by this computer's clock it
    # is not valid yet; a command signed now is in the future too: either refusal names it.
    assert "certificate_expired" in p.stderr or "not_yet_valid" in p.stderr, p.stderr
    assert ("this computer's clock is 7 min 12 s behind the server's; correct the clock "
            "(Settings → Date & time)") in p.stderr, p.stderr
    assert "technician's clock is" not in p.stderr
