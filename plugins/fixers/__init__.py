"""Built-in fixers, one module each (each implements ``hw_fixers``).

==========================================  ============================================
module                                      fixer
==========================================  ============================================
:mod:`plugins.fixers.disk_cleanup`          ``disk.cleanup``: old temp/cache files to a
                                            quarantine (reversible, purged later)
:mod:`plugins.fixers.process_terminate`     ``process.terminate``: SIGTERM, grace, SIGKILL
:mod:`plugins.fixers.service_restart`       ``service.restart``: ``systemctl restart``
:mod:`plugins.fixers.dns_flush`             ``dns.flush``: flush the resolver's cache
==========================================  ============================================

Also the small helpers they share: privilege checks and running a command (an argument
list, never a shell, always with a timeout).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

__all__ = ["BUILTIN_FIXER_MODULES", "current_user", "human_size", "is_admin", "run_command"]

#: The fixer modules, in the order they should be registered.
BUILTIN_FIXER_MODULES: tuple[str, ...] = (
    "plugins.fixers.disk_cleanup",
    "plugins.fixers.process_terminate",
    "plugins.fixers.service_restart",
    "plugins.fixers.dns_flush",
)
#: Output of a command kept for a plan or an outcome, in characters.
MAX_OUTPUT_CHARS = 500


def is_admin() -> bool:
    """Whether the agent runs as root (POSIX) or elevated (Windows)."""
    geteuid = getattr(os, "geteuid", None)
    if geteuid is not None:
        return bool(geteuid() == 0)
    try:
        import ctypes

        windll = getattr(ctypes, "windll", None)
        return bool(windll is not None and windll.shell32.IsUserAnAdmin())
    except (ImportError, OSError, AttributeError):
        return False


def current_user() -> str:
    """The agent's user name, or ``"?"``."""
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no name for this uid (containers)
        return "?"


def run_command(argv: Sequence[str], timeout: float) -> tuple[int, str]:
    """Run ``argv`` (no shell, no stdin) within ``timeout`` seconds.

    Returns:
        ``(exit code, stdout and stderr stripped and cut)``; exit code ``-1`` with the
        reason when it could not be started or did not finish in time.
    """
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, errors="replace",
            stdin=subprocess.DEVNULL, timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired:
        return -1, f"{argv[0]} did not finish within {timeout:g} s"
    except OSError as exc:
        return -1, f"{argv[0]} could not be started: {exc.strerror or exc}"
    output = " ".join(f"{done.stdout}\n{done.stderr}".split())
    if len(output) > MAX_OUTPUT_CHARS:
        output = output[: MAX_OUTPUT_CHARS - 1] + "…"
    return done.returncode, output


def human_size(size: float) -> str:
    """``12 MB``-style size (powers of 1024, like file managers)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # pragma: no cover
