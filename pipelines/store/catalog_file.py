"""Swapping a freshly built catalog file in, safely beside analysts' sessions.

DuckDB names a database's write-ahead log by path (``<catalog>.wal``), so a file renamed over a
catalog that someone holds open read-write gets *their* WAL: every reader then fails with "WAL
does not match database file" and what they wrote is lost. Hence:

- The swap holds a shared lock on the old file (the one DuckDB itself takes for a read-only
  open): readers are never blocked, a read-write open cannot start during the swap, and a session
  already holding the file read-write is detected. Then the new catalog waits in
  ``.<name>.pending`` (``connect`` opens it meanwhile) and the next refresh installs it.
- An old catalog someone wrote into (a WAL beside it, or its size/mtime no longer those the
  refresh left) is renamed, with its WAL, to ``<stem>.kept-<UTC time><suffix>`` instead of being
  replaced: nothing an analyst wrote is destroyed.
- The catalog is read-only on disk (mode 0444), so a non-root DuckDB client opening it read-write
  (the default) fails at once, before anything is written. Analyst tables belong in their own
  database that ATTACHes the catalog ``(READ_ONLY)`` (README, "Query the catalog").
- The file is written in an older storage version (:data:`STORAGE_VERSION`, see :func:`create`),
  so the DuckDB clients analysts have (the ``duckdb`` CLI from PyPI, DBeaver, notebooks on DuckDB
  1.4 or 1.5) open it, not only the duckdb 2.0 that writes it.
- Temporary files of dead refreshes (``.<name>.tmp-*`` no process holds, older than a minute)
  are removed by the next refresh; a concurrent refresh's live temporary file is locked, so kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from connectors.kit.sql import duckdb_connect

#: A temporary catalog file younger than this is never swept (its writer may not have locked it yet).
TEMP_MIN_AGE_S = 60.0
#: The storage format of the catalog file. duckdb 2.0 writes storage version 69 by default, which no
#: older client reads; v1.4.0 (version 67) is the newest that every DuckDB release of the last year
#: reads: the 1.4 LTS line (reads 64-67), 1.5.x (64-68, the ``duckdb-cli`` on PyPI) and 2.0. What the
#: catalog uses (views over ``read_parquet``, table macros, TIMESTAMPTZ, plain tables) all exist there;
#: tests/test_catalog_clients.py opens the catalog in the CLI and runs the README's queries.
STORAGE_VERSION = "v1.4.0"
_FLOCK = "hhqqi4x"  # struct flock on Linux x86-64/arm64: type, whence, start, len, pid


def create(path: Path) -> duckdb.DuckDBPyConnection:
    """A new database file at ``path`` for a catalog, in :data:`STORAGE_VERSION`."""
    return duckdb_connect(str(path), storage_compatibility_version=STORAGE_VERSION)


def pending_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.pending")


def _built_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.built")


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _lock(fd: int, kind: int) -> bool:
    """An open-file-description lock (never dropped by another close in this process)."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0))
    except OSError:
        return False
    return True


def writer_pid(path: Path) -> int | None:
    """The process holding ``path`` open read-write in DuckDB (-1 if unknown), or None.

    Meant for other processes' sessions: closing the probe's descriptor drops this process's own
    POSIX locks on the file (fcntl's rule), so a session of this very process is seen only once.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        got = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, struct.pack(_FLOCK, fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0))
        kind, *_, pid = struct.unpack(_FLOCK, got)
        return None if kind == fcntl.F_UNLCK else int(pid)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _shared_lock(path: Path) -> Iterator[bool]:
    """True while this process holds a shared lock on ``path`` (False: a writer holds it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        yield _lock(fd, fcntl.F_RDLCK)
    finally:
        os.close(fd)


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _written_since_built(target: Path) -> bool:
    if _wal(target).exists():
        return True
    try:
        built = json.loads(_built_path(target).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return False  # a catalog from before this check: only a WAL tells
    return bool(built != _stamp(target))


def install(tmp: Path, target: Path, *, wait_s: float = 2.0) -> str | None:
    """Rename the finished catalog ``tmp`` over ``target``; None when installed, else why not.

    Waits up to ``wait_s`` for a read-write session on ``target`` to end; if it does not, the new
    catalog is left in :func:`pending_path` and the reason is returned.
    """
    tmp.chmod(0o444)
    if not target.exists():
        os.replace(tmp, target)
        _installed(target)
        return None
    deadline = time.monotonic() + wait_s
    while True:
        with _shared_lock(target) as locked:
            # the lock test alone misses a read-write session of this very process: ask who holds
            if locked and writer_pid(target) is None:
                kept = _keep_if_written(target)
                os.replace(tmp, target)
                _installed(target)
                return None if kept is None else f"kept the catalog someone wrote into as {kept}"
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    os.replace(tmp, pending_path(target))
    pid = writer_pid(target)
    who = f"process {pid}" if pid and pid > 0 else "another process"
    return (
        f"{target} is open read-write in {who}: the new catalog waits in {pending_path(target)} "
        "(memport opens it meanwhile) and the next refresh installs it. Open the catalog "
        "read-only, and keep your own tables in your own database (README, Query the catalog)."
    )


def _installed(target: Path) -> None:
    pending_path(target).unlink(missing_ok=True)
    _built_path(target).write_text(json.dumps(_stamp(target)), encoding="utf-8")


def _keep_if_written(target: Path) -> Path | None:
    if not _written_since_built(target):
        return None
    when = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    kept = target.with_name(f"{target.stem}.kept-{when}{target.suffix}")
    os.replace(target, kept)
    if _wal(target).exists():  # the pair stays consistent: DuckDB replays it on the next open
        os.replace(_wal(target), _wal(kept))
    return kept


def readable(target: Path) -> Path:
    """The catalog file to open for reading: the pending one while a session holds ``target``."""
    pending = pending_path(target)
    if pending.exists() and writer_pid(target) is not None:
        return pending
    return target


def sweep_temps(target: Path, *, min_age_s: float = TEMP_MIN_AGE_S) -> list[Path]:
    """Remove temporary catalog files (and their WALs) that dead refreshes left."""
    removed = []
    now = time.time()
    for path in target.parent.glob(f".{target.name}.tmp-*"):
        if path.name.endswith(".wal") or now - path.stat().st_mtime < min_age_s:
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            if not _lock(fd, fcntl.F_RDLCK):  # a live refresh holds it read-write
                continue
            _wal(path).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            removed.append(path)
        finally:
            os.close(fd)
    for wal in target.parent.glob(f".{target.name}.tmp-*.wal"):  # a WAL whose file is gone
        orphan = not wal.with_name(wal.name.removesuffix(".wal")).exists()
        if orphan and now - wal.stat().st_mtime > min_age_s:
            wal.unlink(missing_ok=True)
            removed.append(wal)
    return removed
