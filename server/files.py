"""Files of the server home replaced in one step."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def replace_file(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` in one step: a temporary file of this writer's own in the
    same directory, synced, then :func:`os.replace`. A reader sees the old file or the new
    one, never none or half; two writers at once each replace it whole (the later wins).

    Raises:
        OSError: it cannot be written (``path`` is unchanged, no temporary file is left).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
