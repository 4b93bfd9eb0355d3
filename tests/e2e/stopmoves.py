"""Stop ``disk.cleanup`` in a real agent after N moves, so a test can kill it there.

Loaded with ``HW_PLUGINS=stopmoves``: after ``$HW_STOP_AFTER_MOVES`` files have been moved
into the quarantine, the fixer's worker thread writes the count to ``$HW_STOP_MARKER`` and
blocks for good (the agent process stays alive until the test kills it). Nothing else is
changed: the fixer's own journal and moves run as they do in production.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from plugins.fixers import disk_cleanup

_after = int(os.environ["HW_STOP_AFTER_MOVES"])
_marker = Path(os.environ["HW_STOP_MARKER"])
_real = disk_cleanup._move_nofollow
_moves = 0


def _move_nofollow(*args: Any) -> None:
    global _moves
    _real(*args)
    _moves += 1
    if _moves == _after:
        _marker.write_text(str(_moves), encoding="utf-8")
        threading.Event().wait()  # until the test kills the agent


disk_cleanup._move_nofollow = _move_nofollow
