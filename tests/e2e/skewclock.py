"""Set a real agent's clock off by ``$HW_CLOCK_OFFSET`` seconds (an OS reading).

Loaded with ``HW_PLUGINS=skewclock``: the agent's reading of the current time
(``agent.client.now_utc``) returns the real time plus the offset (negative: behind), as on
a computer whose clock is wrong. Nothing else is changed.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from agent import client

_offset = timedelta(seconds=float(os.environ["HW_CLOCK_OFFSET"]))
_real = client.now_utc


def _now_utc() -> datetime:
    return _real() + _offset


client.now_utc = _now_utc
