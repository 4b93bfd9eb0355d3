"""Built-in fixer ``disk.cleanup``: old temp and cache files into a quarantine.

Arguments (``FixContext.args``)::

    days    files not modified nor read for this many days (default 7, at least 1)
    paths   optional list of absolute paths *inside* the clean-up locations to narrow
            the clean-up to; a path outside them is refused

The clean-up locations (:func:`allowed_roots`) are the OS temp dir and the user's cache
dir (``~/.cache`` or ``$XDG_CACHE_HOME`` on Linux, ``~/Library/Caches`` on macOS,
``%LOCALAPPDATA%\\Temp`` on Windows). Only regular files are touched: symbolic links are
neither followed nor moved, and on POSIX a non-root agent takes only its own files.

Live files are never touched, whatever ``days`` says: a file that any process has open
(:func:`open_files`, every process psutil may inspect) or that was written, read or
created/renamed (inode change time) less than :data:`MIN_AGE_DAYS` ago is left alone —
another program's working files under ``/tmp`` (a test run's, a build's) often carry an
old modification time copied from elsewhere. The plan says what it left alone and why,
with counts; ``apply`` checks again that a file is not open just before moving it.

``apply`` moves the planned files that are unchanged since the plan into
``<workdir>/quarantine/<fix-id>/files/<location index>/<relative path>`` and writes
``manifest.json`` beside; files it cannot move are skipped and reported. Before moving a
batch of files (at most :data:`JOURNAL_BATCH`) it appends one line per move to
``journal.jsonl`` there and fsyncs it (one fsync per batch), so an agent killed half-way
(``kill -9``, a power cut) leaves a journal that names every file it may have moved:
``recover`` rebuilds the manifest from it after the restart (keeping the moves that
happened) and the clean-up can be rolled back like a finished one. When the journal
cannot be written (disk full), no more files are moved. ``rollback``
moves them back (never over a file that exists again). :func:`purge_quarantine` deletes
quarantines older than a given age: only then is the space freed when the quarantine is
on the same file system as the files (the outcome says how much is freed now and how
much on purge).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from plugins import hookimpl
from plugins.api import FixContext, Fixer, FixOutcome, FixPlan, FixRefused
from plugins.fixers import human_size

__all__ = [
    "FINDING_CODES",
    "NAME",
    "allowed_roots",
    "default_locations",
    "hw_fixers",
    "purge_quarantine",
]

NAME = "disk.cleanup"
VERSION = "1"
#: This module emits no findings (it fixes ``disk.almost_full``).
FINDING_CODES: tuple[str, ...] = ()
ADDRESSES = frozenset({"disk.almost_full"})
DEFAULT_DAYS = 7
#: Policy: a file written, read or created less than this many days ago is never moved,
#: whatever ``days`` says (a live file of another program may carry an old mtime).
MIN_AGE_DAYS = 1.0
MAX_DAYS = 3650
#: At most this many files per clean-up (the plan says when there were more).
MAX_FILES = 10_000
#: At most this many paths in ``args.paths``.
MAX_PATHS = 32
#: At most this many lines of ``changes`` name a file (the rest are summed up).
MAX_CHANGE_LINES = 50
#: At most this many skipped files are named in an outcome.
MAX_SKIPPED_LISTED = 50
#: At most this many left-alone files are named per reason in a plan's changes.
MAX_LEFT_ALONE_LISTED = 5
#: Why a file is left alone, as the plan says it (``skipped`` keys of the plan's data).
LEFT_ALONE = {
    "open": "open by a running program",
    "young": f"written, read or created within the last {MIN_AGE_DAYS:g} day (safe age)",
    "not_owned": "another user's",
    "symlinks": "symbolic links (never followed)",
    "unreadable": "unreadable",
}
QUARANTINE_DIR = "quarantine"
MANIFEST = "manifest.json"
#: One JSON line per move, appended and fsynced before the move (the first line: header).
JOURNAL = "journal.jsonl"
#: Moves journaled (one fsync) before they are made, at most this many at a time.
JOURNAL_BATCH = 64
#: At most this many quarantined files are named in an interrupted fix's outcome.
MAX_MANIFEST_LISTED = 200
FIX_ID_PATTERN = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
_DAY = 86400.0


def default_locations() -> list[Path]:
    """Where old files may be cleaned, before resolving links: temp dir, user cache dir."""
    locations = [Path(tempfile.gettempdir())]
    try:
        home = Path.home()
    except (RuntimeError, KeyError):  # no home directory for this user
        home = None
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA", "")
        if local:
            locations.append(Path(local) / "Temp")
    elif sys.platform == "darwin":
        if home is not None:
            locations.append(home / "Library" / "Caches")
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        if xdg and os.path.isabs(xdg):
            locations.append(Path(xdg))
        elif home is not None:
            locations.append(home / ".cache")
    return locations


def allowed_roots() -> list[Path]:
    """The allowlist: each existing :func:`default_locations` dir with links resolved.

    A location that resolves to a file-system root or to the home directory itself is
    dropped (a mis-set ``TMPDIR`` must not make the whole disk "temporary"), and so is
    one inside another.
    """
    try:
        home: Path | None = Path(os.path.realpath(Path.home()))
    except (RuntimeError, KeyError):
        home = None
    roots: list[Path] = []
    for location in default_locations():
        real = Path(os.path.realpath(location))
        if not real.is_dir() or real == Path(real.anchor) or real == home:
            continue
        roots.append(real)
    return [
        root for root in dict.fromkeys(roots)
        if not any(other != root and root.is_relative_to(other) for other in roots)
    ]


# -- plan ----------------------------------------------------------------------------------


def _days(args: Mapping[str, Any]) -> float:
    days = args.get("days", DEFAULT_DAYS)
    if isinstance(days, bool) or not isinstance(days, int | float) or not 1 <= days <= MAX_DAYS:
        raise FixRefused(f"days must be a number from 1 to {MAX_DAYS}, not {days!r}")
    return float(days)


def _targets(ctx: FixContext, roots: list[Path]) -> list[tuple[int, Path]]:
    """``(root index, directory or file)`` to clean: the roots, or ``args.paths`` in them."""
    paths = ctx.args.get("paths")
    if paths is None:
        return list(enumerate(roots))
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list | tuple) or not 0 < len(paths) <= MAX_PATHS:
        raise FixRefused(f"paths must be a list of 1 to {MAX_PATHS} absolute paths")
    where = ", ".join(str(root) for root in roots) or "none on this machine"
    targets: list[tuple[int, Path]] = []
    for raw in paths:
        if not isinstance(raw, str) or not raw or "\0" in raw or not os.path.isabs(raw):
            raise FixRefused(f"paths: {raw!r} is not an absolute path")
        real = Path(os.path.realpath(raw))  # a link inside pointing outside is outside
        index = next((i for i, root in enumerate(roots) if real.is_relative_to(root)), None)
        if index is None:
            raise FixRefused(
                f"{raw} is outside the clean-up locations ({where}): only old files there "
                "can be cleaned"
            )
        if not os.path.lexists(real):
            raise FixRefused(f"{raw} does not exist")
        targets.append((index, real))
    return targets


def _is_candidate(st: os.stat_result, cutoff: float, uid: int | None) -> bool:
    if not stat.S_ISREG(st.st_mode):
        return False
    if uid is not None and st.st_uid != uid:
        return False
    return max(st.st_mtime, st.st_atime) < cutoff


def _inode_changed(st: os.stat_result) -> float:
    """When the file's inode last changed (created, renamed, linked, chmod): an OS reading
    that, unlike the modification time, a program cannot set back."""
    return st.st_ctime


def _young(st: os.stat_result, now: float) -> bool:
    """Written, read or created within :data:`MIN_AGE_DAYS`."""
    return max(st.st_mtime, st.st_atime, _inode_changed(st)) > now - MIN_AGE_DAYS * _DAY


class OpenFiles:
    """The files every process has open, as the OS reports them (psutil), read once.

    A file counts as open when its path or its (device, inode) is among them, so a hard
    link to an open file is open too. ``hidden`` counts processes whose files could not be
    read (another user's, for a non-root agent: whose files it does not take anyway).
    """

    def __init__(self, paths: set[str], hidden: int = 0) -> None:
        self.paths = paths
        self.hidden = hidden
        self.inodes: set[tuple[int, int]] = set()
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                continue
            self.inodes.add((st.st_dev, st.st_ino))

    def __contains__(self, item: tuple[Path, os.stat_result]) -> bool:
        path, st = item
        return str(path) in self.paths or (st.st_dev, st.st_ino) in self.inodes


def open_files() -> OpenFiles:
    """Read which files the processes of this machine have open (psutil, per process)."""
    import psutil

    paths: set[str] = set()
    hidden = 0
    for proc in psutil.process_iter():
        try:
            paths.update(f.path for f in proc.open_files())
        except (psutil.Error, OSError):
            hidden += 1
    return OpenFiles(paths, hidden)


def _walk(target: Path, excluded: tuple[Path, ...], skipped: dict[str, int]
          ) -> Iterator[Path]:
    """Every non-directory entry under ``target``, never following links."""
    try:
        st = os.lstat(target)
    except OSError:
        skipped["unreadable"] += 1
        return
    if not stat.S_ISDIR(st.st_mode):
        yield target
        return

    def unreadable(_: OSError) -> None:
        skipped["unreadable"] += 1

    for dirpath, dirnames, filenames in os.walk(target, followlinks=False, onerror=unreadable):
        here = Path(dirpath)
        kept = []
        for name in dirnames:
            path = here / name
            if path.is_symlink():
                skipped["symlinks"] += 1  # os.walk lists it but would not descend
            elif not _inside(path, excluded):
                kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            yield here / name


def _excluded(ctx: FixContext) -> tuple[Path, ...]:
    """The agent's own directories, resolved: never planned, never moved."""
    return tuple(Path(os.path.realpath(p)) for p in (ctx.workdir, *ctx.protected))


def _inside(path: Path, excluded: tuple[Path, ...]) -> bool:
    return any(path.is_relative_to(e) for e in excluded)


def _move_nofollow(root: Path, source: Path, destination: Path) -> None:
    """Move ``source`` (a file under ``root``) without following a symlink below ``root``.

    Each directory on the way is opened with ``O_NOFOLLOW`` and the file is renamed
    relative to its directory's descriptor, so a local user who swaps a directory for a
    symlink between the plan and the move cannot redirect the move (to ``/etc``, say)
    when the agent runs as root. Where the platform lacks these calls (Windows) it falls
    back to an ordinary move.
    """
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    directory = getattr(os, "O_DIRECTORY", 0)
    if not nofollow or not directory or os.rename not in os.supports_dir_fd:
        shutil.move(source, destination)
        return
    parts = source.relative_to(root).parts
    fd = os.open(root, os.O_RDONLY | directory)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | directory | nofollow, dir_fd=fd)
            os.close(fd)
            fd = inner
        st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "no longer a regular file")
        try:
            os.rename(parts[-1], destination, src_dir_fd=fd)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # Another file system: copy through a descriptor opened without following
            # links, then remove the original relative to its directory.
            src_fd = os.open(parts[-1], os.O_RDONLY | nofollow, dir_fd=fd)
            with os.fdopen(src_fd, "rb") as src, open(destination, "xb") as dst:
                shutil.copyfileobj(src, dst)
            os.utime(destination, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.unlink(parts[-1], dir_fd=fd)
    finally:
        os.close(fd)


def _uid() -> int | None:
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None:
        return None
    uid: int = geteuid()
    return None if uid == 0 else uid


def _left_alone_text(skipped: Mapping[str, int], zh: bool = False) -> str:
    """``Left alone: 2 files open by a running program, ...`` (empty when nothing was)."""
    if zh:
        names = {"open": "正被程序打开", "young": f"{MIN_AGE_DAYS:g} 天内写入、读取或创建",
                 "not_owned": "属于其他用户", "symlinks": "符号链接（不跟随）",
                 "unreadable": "无法读取"}
        parts = [f"{n} 个文件{names[k]}" for k, n in skipped.items() if n and k in names]
        return f"未动：{'，'.join(parts)}。" if parts else ""
    nouns = {"symlinks": ("symbolic link", "symbolic links"),
             "unreadable": ("entry", "entries")}
    parts = []
    for k, n in skipped.items():
        if n and k in LEFT_ALONE:
            one, many = nouns.get(k, ("file", "files"))
            what = LEFT_ALONE[k].removeprefix("symbolic links ")
            parts.append(f"{n} {one if n == 1 else many} {what}")
    return f" Left alone: {'; '.join(parts)}." if parts else ""


def plan(ctx: FixContext) -> FixPlan:
    """List the old files in the clean-up locations that no program uses; change nothing."""
    days = _days(ctx.args)
    roots = allowed_roots()
    targets = _targets(ctx, roots)
    excluded = _excluded(ctx)
    now = time.time()
    cutoff = now - days * _DAY
    uid = _uid()
    skipped = {"symlinks": 0, "not_owned": 0, "unreadable": 0, "open": 0, "young": 0}
    # Named in the plan: this user's own files only. Other users' files are counted, never
    # named: their paths are theirs, not the technician's to read.
    named: dict[str, list[str]] = {"open": [], "young": []}
    live: OpenFiles | None = None  # read once, and only when some file is old enough

    def leave(reason: str, path: Path) -> None:
        skipped[reason] += 1
        if len(named[reason]) < MAX_LEFT_ALONE_LISTED:
            named[reason].append(str(path))

    files: list[dict[str, Any]] = []
    seen: set[str] = set()
    truncated = False
    for index, target in targets:
        for path in _walk(target, excluded, skipped):
            if len(files) >= MAX_FILES:
                truncated = True
                break
            if str(path) in seen or _inside(path, excluded):
                continue
            try:
                st = os.lstat(path)
            except OSError:
                skipped["unreadable"] += 1
                continue
            if stat.S_ISLNK(st.st_mode):
                skipped["symlinks"] += 1
                continue
            if uid is not None and stat.S_ISREG(st.st_mode) and st.st_uid != uid:
                if max(st.st_mtime, st.st_atime) < cutoff:
                    skipped["not_owned"] += 1
                continue
            if not _is_candidate(st, cutoff, uid):
                continue
            seen.add(str(path))
            if _young(st, now):
                leave("young", path)
                continue
            if live is None:
                live = open_files()
            if (path, st) in live:
                leave("open", path)
                continue
            files.append({
                "path": str(path), "root": index, "size": st.st_size,
                "mtime": st.st_mtime, "age_days": int((now - st.st_mtime) // _DAY),
            })
    total = sum(int(f["size"]) for f in files)
    changes = [
        f"move {f['path']} ({human_size(f['size'])}, {f['age_days']} days old) to quarantine"
        for f in sorted(files, key=lambda f: -int(f["size"]))[:MAX_CHANGE_LINES]
    ]
    if len(files) > MAX_CHANGE_LINES:
        rest = sorted(files, key=lambda f: -int(f["size"]))[MAX_CHANGE_LINES:]
        size = human_size(sum(int(f["size"]) for f in rest))
        changes.append(f"... and {len(rest)} more files ({size}) to quarantine")
    for reason, paths in named.items():
        changes += [f"leave {path} alone: {LEFT_ALONE[reason]}" for path in paths]
        if skipped[reason] > len(paths):
            changes.append(f"... and {skipped[reason] - len(paths)} more files left alone: "
                           f"{LEFT_ALONE[reason]}")
    where = ", ".join(str(target) for _, target in targets) or "(no clean-up location exists)"
    if files:
        summary = (
            f"Move {len(files)} files ({human_size(total)}) not used for {days:g} days from "
            f"{where} to a quarantine, from where they can be restored until it is purged."
        )
        summary_zh = (
            f"将 {where} 中 {days:g} 天未使用的 {len(files)} 个文件（{human_size(total)}）"
            "移入隔离区；在隔离区清除之前可以恢复。"
        )
    elif any(skipped[k] for k in ("open", "young", "not_owned")):
        summary = (f"No file in {where} unused for {days:g} days is safe to move: nothing "
                   "to clean.")
        summary_zh = f"{where} 中没有可以安全移动的 {days:g} 天未使用的文件：无需清理。"
    else:
        summary = f"No file in {where} is older than {days:g} days: nothing to clean."
        summary_zh = f"{where} 中没有超过 {days:g} 天的文件：无需清理。"
    summary += _left_alone_text(skipped)
    summary_zh += _left_alone_text(skipped, zh=True)
    if truncated:
        summary += f" (Only the first {MAX_FILES} files are taken; run it again for more.)"
        summary_zh += f"（仅处理前 {MAX_FILES} 个文件，可再次运行以清理更多。）"
    return FixPlan(
        fixer=NAME,
        summary=summary,
        summary_zh=summary_zh,
        changes=changes,
        reversible=True,
        data={
            "fix_id": time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
            + "-" + secrets.token_hex(4),
            "days": days,
            "min_age_days": MIN_AGE_DAYS,
            "roots": [str(root) for root in roots],
            "files": files,
            "total_bytes": total,
            "truncated": truncated,
            "skipped": skipped,
            "left_alone": named,
            "processes_not_inspected": live.hidden if live is not None else 0,
        },
    )


# -- apply ---------------------------------------------------------------------------------


def _fix_id(value: object) -> str:
    if not isinstance(value, str) or not FIX_ID_PATTERN.fullmatch(value):
        raise FixRefused(f"invalid fix id {value!r}")
    return value


def _write_manifest(qdir: Path, manifest: Mapping[str, Any]) -> None:
    temporary = qdir / (MANIFEST + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(temporary, qdir / MANIFEST)


def _fsync_dir(path: Path) -> None:
    """Make a new directory entry in ``path`` durable (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Journal:
    """``journal.jsonl`` of a quarantine: each line appended and fsynced before the move it
    announces, so what a killed ``apply`` may have moved is always on disk."""

    def __init__(self, qdir: Path, header: Mapping[str, Any]) -> None:
        self._file = open(qdir / JOURNAL, "a", encoding="utf-8")  # closed in close()
        try:
            self.append(header)
            self.sync()
            _fsync_dir(qdir)
        except BaseException:
            self._file.close()
            raise

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one line (durable only after :meth:`sync`).

        Raises:
            OSError: it could not be written (``ENOSPC``: the disk is full).
        """
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def sync(self) -> None:
        """Make every line written so far durable (flush, fsync).

        Raises:
            OSError: it could not be written (``ENOSPC``: the disk is full).
        """
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass


def _journal_entries(qdir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(header, moves that happened)`` from a quarantine's journal.

    A journaled move whose file is still in its place unchanged (the agent stopped
    between the journal line and the move, or in the middle of a copy to another file
    system) did not happen: a partial copy in the quarantine is removed. A line cut off
    by the kill is ignored. A journal that cannot be read gives ``({}, [])``.
    """
    try:
        lines = (qdir / JOURNAL).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}, []
    header: dict[str, Any] = {}
    moved: list[dict[str, Any]] = []
    seen: set[str] = set()
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # torn by the kill
        if not isinstance(record, dict):
            continue
        if "fix_id" in record and not header:
            header = record
            continue
        source, stored = record.get("source"), record.get("stored")
        if not isinstance(source, str) or not isinstance(stored, str) or source in seen:
            continue
        if Path(stored).is_absolute() or ".." in Path(stored).parts:
            continue
        stored_path = qdir / stored
        try:
            st = os.lstat(source)
            in_place = st.st_size == record.get("size") and st.st_mtime == record.get("mtime")
        except OSError:
            in_place = False
        if in_place:
            if stored_path.is_file() and not stored_path.is_symlink():
                with contextlib.suppress(OSError):
                    stored_path.unlink()  # a copy cut off half-way
            continue
        if stored_path.is_symlink() or not stored_path.is_file():
            continue  # journaled, never moved (or the move failed)
        seen.add(source)
        moved.append({"source": source, "stored": stored, "size": record.get("size"),
                      "mtime": record.get("mtime")})
    return header, moved


def _movable(entry: object, targets: list[tuple[int, Path]], roots: list[Path],
             excluded: tuple[Path, ...], live: OpenFiles, now: float
             ) -> tuple[Path, int, os.stat_result] | str:
    """``(source, root index, stat)`` if the planned entry may be moved, else why not."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
        return "malformed plan entry"
    source = Path(entry["path"])
    if not source.is_absolute() or os.path.realpath(source.parent) != str(source.parent):
        return "not a plain path (a link on the way)"
    if _inside(source, excluded):
        return "inside the agent's own directory"
    index = next((i for i, root in enumerate(roots) if source.is_relative_to(root)), None)
    if index is None or not any(source.is_relative_to(t) for _, t in targets):
        return "outside the clean-up locations"
    try:
        st = os.lstat(source)
    except FileNotFoundError:
        return "gone since the plan"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return "no longer a regular file"
    if st.st_size != entry.get("size") or st.st_mtime != entry.get("mtime"):
        return "changed since the plan"
    if _young(st, now):
        return LEFT_ALONE["young"]
    if (source, st) in live:
        return LEFT_ALONE["open"]
    return source, index, st


def apply(ctx: FixContext, fix_plan: FixPlan) -> FixOutcome:
    """Move the planned files (those unchanged since the plan) into the quarantine."""
    fix_id = _fix_id(fix_plan.data.get("fix_id"))
    files = fix_plan.data.get("files")
    if not isinstance(files, list):
        raise FixRefused("the plan lists no files")
    roots = allowed_roots()
    targets = _targets(ctx, roots)
    excluded = _excluded(ctx)
    qdir = ctx.workdir / QUARANTINE_DIR / fix_id
    if not files:
        return FixOutcome(True, "Nothing to clean.", {"files_moved": 0, "bytes_moved": 0,
                                                       "bytes_freed": 0})
    qdir.mkdir(parents=True, exist_ok=False, mode=0o700)
    qdev = os.stat(qdir).st_dev
    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    moved = freed = 0
    manifest: dict[str, Any] = {"fix_id": fix_id, "created": time.time(),
                                "roots": [str(r) for r in roots], "entries": entries}
    live = open_files()  # a file opened since the plan is left alone too
    now = time.time()
    stopped = ""  # why no more files were moved (the journal could not be written)
    try:
        journal = _Journal(qdir, {k: v for k, v in manifest.items() if k != "entries"})
    except OSError as exc:
        shutil.rmtree(qdir, ignore_errors=True)
        return FixOutcome(False, "Nothing was moved: the quarantine's journal could not be "
                          f"written ({exc.strerror or exc}); free disk space on this "
                          "computer, then try again.", {"files_moved": 0})
    batch: list[tuple[Path, int, os.stat_result, dict[str, Any]]] = []

    def move_batch() -> str:
        """Journal the batch (one fsync for all), then move its files: ``""``, or why no
        more files are moved."""
        nonlocal moved, freed
        try:
            for *_, record in batch:
                journal.append(record)
            journal.sync()  # durable before any of these moves: a kill cannot lose one
        except OSError as exc:
            return (f"the quarantine's journal could not be written ({exc.strerror or exc}), "
                    "so no more files were moved; free disk space on this computer")
        for source, index, st, record in batch:
            destination = qdir / record["stored"]
            try:
                destination.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                _move_nofollow(roots[index], source, destination)
            except OSError as exc:
                skipped.append({"path": str(source), "reason": exc.strerror or str(exc)})
                continue
            entries.append(record)
            moved += st.st_size
            if st.st_dev != qdev:
                freed += st.st_size
        batch.clear()
        return ""

    try:
        for entry in files:
            checked = _movable(entry, targets, roots, excluded, live, now)
            if isinstance(checked, str):
                path = entry.get("path") if isinstance(entry, Mapping) else None
                skipped.append({"path": str(path), "reason": checked})
                continue
            source, index, st = checked
            stored = Path("files") / str(index) / source.relative_to(roots[index])
            batch.append((source, index, st, {"source": str(source), "stored": stored.as_posix(),
                                              "size": st.st_size, "mtime": st.st_mtime}))
            if len(batch) >= JOURNAL_BATCH and (stopped := move_batch()):
                break
        else:
            if batch:
                stopped = move_batch()
    finally:
        journal.close()
        try:
            _write_manifest(qdir, manifest)
        except OSError:
            pass  # the journal names every move: recover() and rollback() read it
    details: dict[str, Any] = {
        "fix_id": fix_id,
        "quarantine": str(qdir),
        "files_moved": len(entries),
        "bytes_moved": moved,
        "bytes_freed": freed,
        "bytes_freed_on_purge": moved - freed,
        "files_skipped": len(skipped),
        "skipped": skipped[:MAX_SKIPPED_LISTED],
    }
    if stopped:
        details["stopped"] = stopped
    if not entries:
        return FixOutcome(False, f"None of the {len(files)} planned files could be moved"
                          + (f": {stopped}." if stopped else "."), details, undo=None)
    summary = (
        f"Moved {len(entries)} files ({human_size(moved)}) to the quarantine {qdir}; "
        f"{human_size(freed)} freed now"
    )
    summary += (
        f", {human_size(moved - freed)} more when the quarantine is purged."
        if moved - freed else "."
    )
    if skipped:
        summary += f" {len(skipped)} files were skipped."
    if stopped:
        summary += f" Stopped early: {stopped}."
    return FixOutcome(not stopped, summary, details, undo={"fix_id": fix_id})


def verify(ctx: FixContext, fix_plan: FixPlan, outcome: FixOutcome) -> str:
    """``""`` when none of the planned files is still in place, unchanged."""
    files = fix_plan.data.get("files")
    remaining = 0
    size = 0
    for entry in files if isinstance(files, list) else []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
            continue
        try:
            st = os.lstat(entry["path"])
        except OSError:
            continue
        if st.st_size == entry.get("size") and st.st_mtime == entry.get("mtime"):
            remaining += 1
            size += st.st_size
    if remaining:
        return (f"{remaining} of the planned files ({human_size(size)}) are still in place: "
                "they could not be moved.")
    return ""


def recover(ctx: FixContext, fix_plan: FixPlan) -> FixOutcome:
    """What an ``apply`` of ``fix_plan`` that was cut off had moved, from its journal.

    Writes the manifest of the moves that happened (so ``rollback`` and
    :func:`purge_quarantine` work as for a finished clean-up) and names them in the
    outcome (``details["manifest"]``, the first :data:`MAX_MANIFEST_LISTED`). ``ok`` is
    false: the clean-up did not finish.
    """
    fix_id = _fix_id(fix_plan.data.get("fix_id"))
    files = fix_plan.data.get("files")
    planned = len(files) if isinstance(files, list) else 0
    qdir = ctx.workdir / QUARANTINE_DIR / fix_id
    if not qdir.is_dir():
        return FixOutcome(False, f"Interrupted before any of the {planned} planned files "
                          "was moved: nothing changed.",
                          {"fix_id": fix_id, "files_planned": planned, "files_moved": 0})
    header, moved = _journal_entries(qdir)
    if not header:  # the kill came before the journal's first line: nothing was moved
        shutil.rmtree(qdir, ignore_errors=True)
        return FixOutcome(False, f"Interrupted before any of the {planned} planned files "
                          "was moved: nothing changed.",
                          {"fix_id": fix_id, "files_planned": planned, "files_moved": 0})
    with contextlib.suppress(OSError):  # a full disk: rollback reads the journal instead
        _write_manifest(qdir, {**header, "entries": moved})
    size = sum(int(e["size"]) for e in moved if isinstance(e.get("size"), int))
    details: dict[str, Any] = {
        "fix_id": fix_id, "quarantine": str(qdir), "files_planned": planned,
        "files_moved": len(moved), "bytes_moved": size,
        "manifest": [{"source": e["source"], "size": e["size"]}
                     for e in moved[:MAX_MANIFEST_LISTED]],
        "manifest_complete": len(moved) <= MAX_MANIFEST_LISTED,
    }
    if not moved:
        shutil.rmtree(qdir, ignore_errors=True)
        return FixOutcome(False, f"Interrupted before any of the {planned} planned files "
                          "was moved: nothing changed.", details)
    return FixOutcome(
        False, f"Interrupted after moving {len(moved)} of the {planned} planned files "
        f"({human_size(size)}) to the quarantine {qdir}; the others are where they were. "
        "The moved files can be restored.", details, undo={"fix_id": fix_id})


# -- rollback and purge --------------------------------------------------------------------


def rollback(ctx: FixContext, outcome: FixOutcome) -> FixOutcome:
    """Move the quarantined files back, never over a file that exists again."""
    fix_id = _fix_id((outcome.undo or {}).get("fix_id"))
    qdir = ctx.workdir / QUARANTINE_DIR / fix_id
    try:
        manifest = json.loads((qdir / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        header, moved = _journal_entries(qdir)
        if not header:
            return FixOutcome(False, f"The quarantine {fix_id} no longer exists (purged?).")
        manifest = {**header, "entries": moved}  # an apply that was cut off
    except ValueError:
        manifest = None
    entries = manifest.get("entries") if isinstance(manifest, dict) else None
    if not isinstance(entries, list):
        return FixOutcome(False, f"The manifest of quarantine {fix_id} is unreadable.")
    roots = allowed_roots()
    restored = 0
    left: list[Any] = []
    problems: list[dict[str, str]] = []
    for entry in entries:
        reason = ""
        source = Path(str(entry.get("source", ""))) if isinstance(entry, dict) else Path()
        stored = str(entry.get("stored", "")) if isinstance(entry, dict) else ""
        stored_path = qdir / stored
        if not source.is_absolute() or not any(source.is_relative_to(r) for r in roots):
            reason = "not inside a clean-up location"
        elif (not stored or Path(stored).is_absolute() or ".." in Path(stored).parts
              or stored_path.is_symlink() or not stored_path.is_file()):
            reason = "missing from the quarantine"
        elif os.path.lexists(source):
            reason = "a file exists there again"
        else:
            try:
                source.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(stored_path, source)
                restored += 1
                continue
            except OSError as exc:
                reason = exc.strerror or str(exc)
        left.append(entry)
        problems.append({"path": str(source), "reason": reason})
    if left:
        manifest["entries"] = left
        _write_manifest(qdir, manifest)
    else:
        shutil.rmtree(qdir, ignore_errors=True)
    details = {"files_restored": restored, "files_not_restored": len(left),
               "problems": problems[:MAX_SKIPPED_LISTED]}
    if left:
        return FixOutcome(False, f"Restored {restored} files; {len(left)} could not be "
                          "restored and stay in the quarantine.", details,
                          undo={"fix_id": fix_id})
    return FixOutcome(True, f"Restored {restored} files to where they were.", details)


def purge_quarantine(workdir: Path, older_than: timedelta, *, now: float | None = None
                     ) -> list[str]:
    """Delete the quarantines of ``workdir`` created more than ``older_than`` ago.

    Returns the fix ids purged. A quarantine whose manifest is unreadable is dated by its
    directory's modification time. Links are never followed.
    """
    base = workdir / QUARANTINE_DIR
    cutoff = (time.time() if now is None else now) - older_than.total_seconds()
    purged: list[str] = []
    try:
        children = sorted(base.iterdir())
    except FileNotFoundError:
        return purged
    for qdir in children:
        if qdir.is_symlink() or not qdir.is_dir() or not FIX_ID_PATTERN.fullmatch(qdir.name):
            continue
        try:
            created = json.loads((qdir / MANIFEST).read_text(encoding="utf-8"))["created"]
            if isinstance(created, bool) or not isinstance(created, int | float):
                raise TypeError
        except (OSError, ValueError, KeyError, TypeError):
            created = qdir.stat().st_mtime
        if created < cutoff:
            shutil.rmtree(qdir, ignore_errors=True)
            purged.append(qdir.name)
    return purged


FIXER = Fixer(
    name=NAME,
    version=VERSION,
    summary="Move temp and cache files older than N days to a quarantine (undoable)",
    addresses=ADDRESSES,
    plan=plan,
    apply=apply,
    verify=verify,
    rollback=rollback,
    recover=recover,
    timeout=300.0,
)


@hookimpl
def hw_fixers() -> list[Fixer]:
    """The ``disk.cleanup`` fixer."""
    return [FIXER]
