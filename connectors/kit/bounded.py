"""Bounded reading of untrusted bytes: every decompression layer and every line, by construction.

A dump can hide any amount of data behind a few bytes (a gzip inside a zip inflating to gigabytes)
or put a whole file on one line. Readers therefore never decompress or split lines themselves:

* :class:`Layer` wraps one decompression layer (a zip entry, a gzip stream inside one). It counts
  what the layer gives out and stops it past ``limit`` bytes in total, or past ``MAX_RATIO`` times
  the bytes read *from the dump file* so far (a :class:`Meter` at the bottom of the stack, so the
  ratio is end to end, not per layer: a gzip in a zip may not multiply two ratios). The ratio is
  judged once ``RATIO_GRACE`` bytes came out, so small, very compressible entries pass. The
  entries of one archive together may give out no more than ``MAX_RATIO`` times the file's size
  (entries that share their compressed data, an "overlapping" zip bomb, pass every per-entry check).
* :func:`gunzip` opens a gzip stream inside another layer as a further bounded layer.
* :func:`lines` splits a byte stream into lines of at most ``MAX_LINE_BYTES``; a longer line is
  skipped (read through, never held) and handed over as its first bytes and its full size, so the
  reader makes it one ``payload_too_large`` reject and goes on with the next line.

A layer that passes a bound or whose data is broken (bad CRC, an entry whose data does not match
its directory record, truncated deflate data) raises :class:`Unreadable` with a reason code and a
detail naming the layer: the connector makes it one reject for the rest of that entry (the
records before it were read; the other entries of the archive still are).
"""

from __future__ import annotations

import gzip
import io
import lzma
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Protocol, cast

from connectors.schema import RejectReason

#: What one decompression layer may give out in total. Far above any real memory dump (a ChatGPT
#: export of a heavy account is a few hundred MB); a dump past it is split by its owner.
MAX_OUTPUT_BYTES = 4 << 30
#: Output per byte of the dump file, end to end. Text compresses 5-20:1 and repetitive JSON up to
#: ~100:1; deflate's own ceiling is ~1032:1, which only constructed data reaches.
MAX_RATIO = 200
#: Output a layer may give before its ratio is judged: a real file may start with a very
#: compressible stretch (indentation, padding), so only a sustained ratio is a bomb. A bomb is
#: still stopped after this much output, and no line of it is ever held (see :func:`lines`).
RATIO_GRACE = 16 << 20
#: One line (one record) read out of a container. The content limit is 100 KB; metadata and
#: escaping make a real record a few times that at most, so 8 MiB is never a real memory.
MAX_LINE_BYTES = 8 << 20
#: What is kept of an oversized line, for the reject's ``raw`` (so it can be identified).
KEPT_PREFIX_BYTES = 1 << 10
_BLOCK_BYTES = 1 << 20

#: What a broken compressed stream raises (zip CRC or header mismatch, truncated or invalid
#: deflate/gzip/bzip2/lzma data, a compression method zipfile cannot read).
BROKEN = (zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError, NotImplementedError)


_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}


def compression(head: bytes) -> str | None:
    """The compression a dump's first bytes announce (gzip, zstd, bzip2, xz), or None.

    memport decompresses only inside the archives a system exports (an OpenMemory backup's
    ``memories.jsonl.gz``); a compressed dump file on its own is refused by name, never read as
    text."""
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


class Unreadable(Exception):
    """A decompression layer passed a bound or its data is broken; what follows is not read."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Source(Protocol):
    """What a layer reads from: a file, a zip entry, a gzip stream, another layer."""

    def read(self, n: int = ..., /) -> bytes: ...

    def seek(self, offset: int, whence: int = ..., /) -> int: ...

    def tell(self) -> int: ...

    def close(self) -> None: ...


class Meter:
    """Counts the bytes read from the dump file under a stack of layers (for the ratio), and
    what its outermost layers (the entries of an archive) gave out together."""

    def __init__(self, inner: IO[bytes], size: int) -> None:
        self.inner = inner
        self.size = size
        self.count = 0
        self.inflated = 0

    @property
    def whole_limit(self) -> int:
        """What the archive's entries may give out together."""
        return MAX_RATIO * self.size + RATIO_GRACE

    @property
    def exhausted(self) -> bool:
        """The archive's entries gave out all they may: read no further entry."""
        return self.inflated > self.whole_limit

    # The file-object protocol zipfile uses on the archive file.
    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.count += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.inner.seek(offset, whence)

    def tell(self) -> int:
        return self.inner.tell()

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self.inner.close()


class Layer(io.RawIOBase):
    """One bounded decompression layer over ``inner`` (see the module docstring).

    ``name`` says which layer it is in details (``entry 'memories.jsonl.gz'``).
    """

    def __init__(
        self,
        inner: Source,
        *,
        name: str,
        meter: Meter,
        limit: int = MAX_OUTPUT_BYTES,
        outermost: bool = False,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.name = name
        self.meter = meter
        self.limit = limit
        #: An archive entry: its output also counts toward the whole archive's.
        self.outermost = outermost
        self._out = 0
        self._base = meter.count

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        want = len(buffer)
        try:
            data = self.inner.read(want)
        except BROKEN as exc:
            raise Unreadable(
                RejectReason.MALFORMED_DOCUMENT,
                f"{self.name} is broken after {self._out:,} bytes ({exc}): corrupt, or its data does not "
                "match the size its archive declares",
            ) from None
        n = len(data)
        buffer[:n] = data
        self._out += n
        if self.outermost:
            self.meter.inflated += n
        self._check()
        return n

    def _check(self) -> None:
        if self.outermost and self.meter.exhausted:
            raise Unreadable(
                RejectReason.UNSAFE_ARCHIVE_ENTRY,
                f"{self.name}: the archive's entries together give out more than "
                f"{self.meter.whole_limit:,} bytes from a {self.meter.size:,}-byte file "
                f"(ratio above {MAX_RATIO}; entries sharing their data)",
            )
        if self._out > self.limit:
            raise Unreadable(
                RejectReason.UNSAFE_ARCHIVE_ENTRY,
                f"{self.name} decompresses to more than {self.limit:,} bytes (the limit)",
            )
        used = self.meter.count - self._base
        if self._out > RATIO_GRACE and self._out > MAX_RATIO * max(used, 1):
            raise Unreadable(
                RejectReason.UNSAFE_ARCHIVE_ENTRY,
                f"{self.name} inflates {used:,} bytes of the file to more than {self._out:,} "
                f"(ratio above {MAX_RATIO}): a decompression bomb",
            )

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Rewinding starts the count again; seeking forward reads through (and counts)."""
        try:
            pos = self.inner.seek(offset, whence)
        except BROKEN as exc:
            raise Unreadable(RejectReason.MALFORMED_DOCUMENT, f"{self.name} is broken ({exc})") from None
        if pos == 0:
            self._out, self._base = 0, self.meter.count
        else:
            self._out = max(self._out, pos)
            self._check()
        return pos

    def tell(self) -> int:
        return self.inner.tell()

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            super().close()


def gunzip(outer: IO[bytes], name: str) -> IO[bytes]:
    """The gzip stream held in ``outer``, a bounded layer (e.g. ``memories.jsonl.gz`` in a zip),
    bounded in turn against the same file."""
    if not isinstance(outer, Layer):
        raise TypeError("gunzip reads only inside a bounded layer (its ratio is judged against the file)")
    return as_io(Layer(gzip.GzipFile(fileobj=outer, mode="rb"), name=name, meter=outer.meter))


def as_io(layer: Layer) -> IO[bytes]:
    """A layer as the binary file object readers take (it is one: read, seek, tell, close)."""
    return cast(IO[bytes], layer)


@dataclass(frozen=True, slots=True)
class Line:
    """One line: its 0-based number, its bytes (without ``\\n`` or a final ``\\r``) and its size.

    An oversized line (``size`` > the limit) holds only its first ``KEPT_PREFIX_BYTES``."""

    number: int
    data: bytes
    size: int
    oversized: bool


def lines(stream: Source, *, limit: int = MAX_LINE_BYTES) -> Iterator[Line]:
    """The lines of ``stream``, none longer than ``limit`` held (see the module docstring).

    Memory is bounded by ``limit`` plus one read block, whatever the stream holds.
    """
    number = 0
    carry = b""
    skipping: Line | None = None  # the oversized line being read through
    while True:
        block = stream.read(_BLOCK_BYTES)
        if not block:
            break
        if skipping is not None:
            end = block.find(b"\n")
            if end < 0:
                skipping = Line(number, skipping.data, skipping.size + len(block), True)
                continue
            yield Line(number, skipping.data, skipping.size + end, True)
            number += 1
            skipping, block = None, block[end + 1 :]
        parts = (carry + block).split(b"\n") if carry else block.split(b"\n")
        carry = parts.pop()
        for part in parts:
            yield _line(number, part, limit)
            number += 1
        if len(carry) > limit:
            skipping, carry = Line(number, carry[:KEPT_PREFIX_BYTES], len(carry), True), b""
    if skipping is not None:
        yield skipping
    elif carry:
        yield _line(number, carry, limit)


def _line(number: int, data: bytes, limit: int) -> Line:
    if len(data) > limit:
        return Line(number, data[:KEPT_PREFIX_BYTES], len(data), True)
    return Line(number, data[:-1] if data.endswith(b"\r") else data, len(data), False)
