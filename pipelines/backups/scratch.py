"""Scratch space of the restore check, and the removal of what killed checks left there.

A killed snapshot run leaves its restore-check folder behind (a full restored copy of the store).
Each folder is named after the process that made it, so the next check removes the folders whose
process is gone (and, whatever their name, those older than a day: no check runs that long).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

PREFIX = "memport-restore-check-"
MIN_AGE_S = 60.0
MAX_AGE_S = 24 * 3600.0


def scratch_space(parent: str | Path | None = None) -> tempfile.TemporaryDirectory[str]:
    """A fresh scratch folder under ``parent`` (default: the system's), after sweeping dead ones."""
    sweep(Path(parent) if parent is not None else Path(tempfile.gettempdir()))
    return tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-", dir=parent)


def sweep(parent: Path) -> list[Path]:
    removed = []
    now = time.time()
    for folder in parent.glob(f"{PREFIX}*"):
        try:
            age = now - folder.stat().st_mtime
        except FileNotFoundError:
            continue
        pid_text = folder.name.removeprefix(PREFIX).split("-", 1)[0]
        dead = pid_text.isdigit() and not _exists(int(pid_text))
        if folder.is_dir() and ((dead and age > MIN_AGE_S) or age > MAX_AGE_S):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
