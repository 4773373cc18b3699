"""Zip archives read in place through fsspec (never extracted to disk), safe on hostile input.

An entry is *unsafe* when its name could escape a folder (``..``, an absolute or drive path,
backslashes), when it declares more than ``MAX_ENTRY_BYTES`` uncompressed or a compression ratio
above ``MAX_RATIO`` (a zip bomb), or when it is encrypted. Connectors turn an unsafe entry they
would have read into one ``unsafe_archive_entry`` reject and go on with the others. Reading is
bounded by the declared size (``zipfile`` stops there and checks the CRC), so an entry that lies
about its size cannot inflate past it.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from fsspec import AbstractFileSystem

from connectors.errors import DumpFormatError

MAX_ENTRY_BYTES = 4 << 30
MAX_RATIO = 200
MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    compressed: int
    #: Why the entry must not be read, or None.
    problem: str | None
    info: zipfile.ZipInfo

    @property
    def basename(self) -> str:
        return self.name.rsplit("/", 1)[-1]


@contextlib.contextmanager
def open_zip(fs: AbstractFileSystem, path: str, *, expected: str) -> Iterator[zipfile.ZipFile]:
    """The archive at ``path``, read with seeks through fsspec (ranged reads on object stores)."""
    with fs.open(path, "rb") as f:
        try:
            archive = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DumpFormatError(
                fs.unstrip_protocol(path), expected, f"a broken zip archive ({exc})"
            ) from None
        if len(archive.infolist()) > MAX_ENTRIES:
            raise DumpFormatError(
                fs.unstrip_protocol(path), expected, f"a zip archive of more than {MAX_ENTRIES:,} entries"
            )
        with archive:
            yield archive


def entries(archive: zipfile.ZipFile) -> list[Entry]:
    """Every file entry (folders left out), each with its safety verdict."""
    return [
        Entry(info.filename, info.file_size, info.compress_size, _problem(info), info)
        for info in archive.infolist()
        if not info.is_dir()
    ]


def _problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if "\\" in name or name.startswith("/") or ".." in parts or (len(name) > 1 and name[1] == ":"):
        return f"entry name {name!r} points outside the archive"
    if info.flag_bits & 0x1:
        return f"entry {name!r} is encrypted"
    if info.file_size > MAX_ENTRY_BYTES:
        return f"entry {name!r} declares {info.file_size:,} bytes uncompressed (limit {MAX_ENTRY_BYTES:,})"
    if info.file_size > 1 << 20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        return (
            f"entry {name!r} inflates {info.compress_size:,} bytes to {info.file_size:,} "
            f"(ratio above {MAX_RATIO})"
        )
    return None


def open_entry(archive: zipfile.ZipFile, entry: Entry) -> IO[bytes]:
    """A stream of one safe entry's bytes."""
    if entry.problem is not None:
        raise ValueError(entry.problem)
    return archive.open(entry.info)
