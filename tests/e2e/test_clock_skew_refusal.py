"""Clock skew (issue 13, break 6): a real agent whose clock is 7 min 12 s behind, and a
technician whose clock is 4 min 30 s ahead; the refusal the technician gets says which
clock is off, by how much, and how to correct it."""

from __future__ import annotations

import os
from pathlib import Path

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


SKEWED_TECH = '''
import datetime as _dt
import os

import tech.client

_offset = _dt.timedelta(seconds=float(os.environ["HW_TECH_CLOCK_OFFSET"]))


class _Skewed(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return _dt.datetime.now(tz) + _offset


tech.client.datetime = _Skewed
'''


def test_a_technician_whose_clock_is_ahead_is_told_so(harness: Harness,
                                                       tmp_path: Path) -> None:
    """The technician's clock (an OS reading, shifted in the real hw-tech process by a
    sitecustomize) is 4 min 30 s ahead: the server's own check names that clock."""
    h = harness
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    h.start_agent(home)
    case = h.help(home).splitlines()[0]
    alice = h.add_tech("alice")
    h.grant(home, case, "alice")
    site = tmp_path / "skewed-tech"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SKEWED_TECH)
    p = h.run("hw-tech", "--home", str(alice), "diag", case, "--probes", "cpu", check=False,
              env={"PYTHONPATH": f"{site}{os.pathsep}{h.env['PYTHONPATH']}",
                   "HW_TECH_CLOCK_OFFSET": "270"})
    assert p.returncode == 1 and "not_yet_valid" in p.stderr, p.stderr
    assert "the technician's clock is 4 min 30 s ahead of the server's" in p.stderr, p.stderr
    assert "this computer's clock" not in p.stderr
