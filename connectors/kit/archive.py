"""Zip archives read in place through fsspec (never extracted to disk), safe on hostile input.

An entry is *unsafe* when its name could escape a folder (``..``, an absolute or drive path,
backslashes), when it declares more than ``MAX_ENTRY_BYTES`` uncompressed or a compression ratio
above ``MAX_RATIO`` (a zip bomb), or when it is encrypted. Connectors turn an unsafe entry they
would have read into one ``unsafe_archive_entry`` reject and go on with the others.

An entry is read as a bounded layer (``bounded.Layer``): never past its declared size (``zipfile``
stops there and checks the CRC) nor past ``bounded.MAX_RATIO`` times the bytes read from the
file, and a gzip inside it is bounded the same way, end to end (``bounded.gunzip``). An entry
whose data is broken or does not match its directory record (a bad CRC: it lies about its size),
or whose local header is corrupt, raises ``bounded.Unreadable`` naming the entry, at open or
while read: the connector makes it one reject and goes on with the other entries.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from fsspec import AbstractFileSystem

from connectors.errors import DumpFormatError
from connectors.kit import bounded
from connectors.schema import RejectReason

MAX_ENTRY_BYTES = bounded.MAX_OUTPUT_BYTES
MAX_RATIO = bounded.MAX_RATIO
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


@dataclass(frozen=True)
class Archive:
    """An open zip archive and the meter of the bytes read from its file."""

    zip: zipfile.ZipFile
    meter: bounded.Meter


@contextlib.contextmanager
def open_zip(fs: AbstractFileSystem, path: str, *, expected: str) -> Iterator[Archive]:
    """The archive at ``path``, read with seeks through fsspec (ranged reads on object stores)."""
    with fs.open(path, "rb") as f:
        end = f.seek(0, 2)
        f.seek(0)
        meter = bounded.Meter(f, end if isinstance(end, int) else int(fs.size(path) or 0))
        try:
            archive = zipfile.ZipFile(meter)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise DumpFormatError(
                fs.unstrip_protocol(path), expected, f"a broken zip archive ({exc})"
            ) from None
        if len(archive.infolist()) > MAX_ENTRIES:
            raise DumpFormatError(
                fs.unstrip_protocol(path), expected, f"a zip archive of more than {MAX_ENTRIES:,} entries"
            )
        with archive:
            yield Archive(archive, meter)


def entries(archive: Archive) -> list[Entry]:
    """Every file entry (folders left out), each with its safety verdict."""
    return [
        Entry(info.filename, info.file_size, info.compress_size, _problem(info), info)
        for info in archive.zip.infolist()
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


def open_entry(archive: Archive, entry: Entry) -> IO[bytes]:
    """A bounded stream of one safe entry's bytes; :class:`bounded.Unreadable` if its local
    header is broken (at open) or its data is (while read)."""
    if entry.problem is not None:
        raise ValueError(entry.problem)
    name = f"entry {entry.name!r}"
    try:
        stream: IO[bytes] = archive.zip.open(entry.info)
    except bounded.BROKEN as exc:
        raise bounded.Unreadable(
            RejectReason.MALFORMED_DOCUMENT, f"{name} cannot be opened: its local header is broken ({exc})"
        ) from None
    layer = bounded.Layer(stream, name=name, meter=archive.meter, limit=entry.size, outermost=True)
    return bounded.as_io(layer)
