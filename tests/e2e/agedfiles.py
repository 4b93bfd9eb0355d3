"""Recorded inode-change times for ``disk.cleanup`` in a real agent (an OS reading).

A test writes its "old" files now and ages them with ``os.utime``, which cannot age the
inode-change time (ctime) that ``disk.cleanup`` also reads. Loaded into a real agent with
``HW_PLUGINS=agedfiles``, this module makes the fixer read, for the paths listed in the JSON
file ``$HW_AGED_FILES`` (``{path: ctime}``), the recorded time — what a file that old shows
— and the real ctime for every other file. Nothing else is changed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from plugins.fixers import disk_cleanup

_recorded = {os.stat(path).st_ino: float(ctime) for path, ctime in json.loads(
    Path(os.environ["HW_AGED_FILES"]).read_text(encoding="utf-8")).items()}
_real = disk_cleanup._inode_changed


def _inode_changed(st: os.stat_result) -> float:
    return _recorded.get(st.st_ino, _real(st))


disk_cleanup._inode_changed = _inode_changed
