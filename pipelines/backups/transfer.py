"""Moving file contents for backups: hash as we stream, and let a file appear only when whole.

Locally a file is written under a temporary name beside its destination, flushed to disk and
renamed over it (one atomic step); on object stores an upload becomes visible only when it is
complete (one PUT or a completed multipart upload). Either way a reader, or a process killed at
any instant, sees the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

from connectors.errors import BackupError
from pipelines.store.locations import Location

CHUNK = 8 << 20


def hash_file(fs: Any, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def same_content(location: Location, path: str, size: int, sha256: str) -> bool:
    """Whether ``path`` already holds exactly these bytes (size first: no read when it differs)."""
    try:
        if int(location.fs.info(path)["size"]) != size:
            return False
    except FileNotFoundError:
        return False
    return hash_file(location.fs, path) == sha256


def copy_hashing(src_fs: Any, src: str, backup: Location) -> tuple[str, int, str]:
    """Stream ``src`` into ``<backup>/tmp/``, hashing as it goes: (sha256, bytes, tmp path)."""
    tmp = backup.path("tmp", uuid.uuid4().hex)
    if backup.is_local:
        Path(tmp).parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        with src_fs.open(src, "rb") as fin, backup.fs.open(tmp, "wb") as fout:
            while block := fin.read(CHUNK):
                digest.update(block)
                fout.write(block)
                size += len(block)
    except BaseException:
        if backup.fs.exists(tmp):
            backup.fs.rm(tmp)
        raise
    return digest.hexdigest(), size, tmp


def copy_whole(src_fs: Any, src: str, dest: Location, path: str, sha256: str) -> None:
    """Copy ``src`` to ``path`` so that ``path`` only ever holds its old bytes or all of ``src``,
    which must hash to ``sha256`` (checked before the new bytes become visible, locally)."""
    digest = hashlib.sha256()
    if not dest.is_local:  # the object appears when the upload completes
        with src_fs.open(src, "rb") as fin, dest.fs.open(path, "wb") as fout:
            while block := fin.read(CHUNK):
                digest.update(block)
                fout.write(block)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            with src_fs.open(src, "rb") as fin, open(tmp, "wb") as fout:
                while block := fin.read(CHUNK):
                    digest.update(block)
                    fout.write(block)
                fout.flush()
                os.fsync(fout.fileno())
            if digest.hexdigest() == sha256:
                os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    if digest.hexdigest() != sha256:
        raise BackupError(
            f"{src} changed while it was copied to {path} (its sha256 is now {digest.hexdigest()}, "
            f"expected {sha256}); run the restore again"
        )
