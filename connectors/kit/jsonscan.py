"""Split a JSON document into its records' bytes, bounded by construction, before anything parses them.

:class:`Splitter` walks a document byte by byte (with regular expressions doing the runs between
brackets, so Python sees only brackets and structural characters) and yields, for every item
under an ijson-style prefix (``item``, ``results.item``, ``""`` for the whole document), the
item's byte offset and text, or a problem:

- an item longer than ``max_bytes`` is skipped to its end without being kept (``payload_too_large``);
- an item nesting deeper than ``max_depth`` is still walked to its end, counting depth only
  (``too_deep``): no nested value is ever built;
- bytes that are not UTF-8 do not disturb the walk; the item that holds them is ``invalid_utf8``.

So a fault inside one record costs that record, and the walk resumes at the next. Where the
document's own structure breaks (it ends mid-way, a bracket closes what it should not, a second
document follows the first), the walk stops and :attr:`Splitter.unread` says from which byte
offset how many bytes were not read and why: a caller reports them, never drops them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from connectors.base import Unread
from connectors.schema import MAX_DEPTH, MAX_RECORD_BYTES, RejectReason

BOM = b"\xef\xbb\xbf"
_BLOCK = 1 << 20
#: Object keys on the way to the items are short; a longer one is not a dump's envelope.
_MAX_KEY_BYTES = 1 << 16
#: A run without brackets: anything but quotes and brackets, and whole strings (possessive, so
#: an unterminated string at the end of the buffer costs no backtracking).
_RUN = re.compile(rb'(?:[^"\[\]{}]++|"(?:[^"\\]++|\\.)*+")*+', re.S)
#: The same, and whole containers nesting up to ``_SHALLOW`` levels: the common case, a record's
#: small objects and lists, passes in one match instead of one Python step per bracket.
_SHALLOW = 3


def _nested(levels: int) -> re.Pattern[bytes]:
    plain, string = rb'[^"\[\]{}]++', rb'"(?:[^"\\]++|\\.)*+"'
    inner = rb"(?:" + plain + rb"|" + string + rb")*+"
    for _ in range(levels):
        inner = rb"(?:" + plain + rb"|" + string + rb"|[\[{]" + inner + rb"[\]}])*+"
    return re.compile(inner, re.S)


_RUN_SHALLOW = _nested(_SHALLOW)
#: The rest of a string already opened: stops at its closing quote, a final backslash or the end.
_STRING_TAIL = re.compile(rb'(?:[^"\\]++|\\.)*+', re.S)
#: A scalar (number, true, false, null, or garbage) runs to the next delimiter.
_SCALAR = re.compile(rb"[^,\]}\s\[{\"]*+")
_NON_WS = re.compile(rb"[^ \t\r\n]")


def _end(pattern: re.Pattern[bytes], data: bytes, i: int) -> int:
    """Where ``pattern`` (which matches the empty string too, so always matches) ends from ``i``."""
    found = pattern.match(data, i)
    assert found is not None
    return found.end()


@dataclass(frozen=True)
class Item:
    """One item: its position among the items, byte offset, text (None when a problem kept it
    from being read whole) and the problem, if any."""

    pos: int
    offset: int
    data: bytes | None
    reason: RejectReason | None = None
    detail: str | None = None


class _End(Exception):
    """The document's structure breaks at ``offset``: the walk cannot go on."""

    def __init__(self, offset: int, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.offset = offset
        self.reason = reason
        self.detail = detail


class Splitter:
    """Iterate over the items of one document read from ``f``; see the module docstring."""

    def __init__(
        self,
        f: IO[bytes],
        prefix: str,
        *,
        max_bytes: int = MAX_RECORD_BYTES,
        max_depth: int = MAX_DEPTH,
        skip_bom: bool = True,
        start: int = 0,
    ) -> None:
        self.f = f
        self.path = [p for p in prefix.split(".") if p] if prefix else []
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.buf = b""
        self.i = 0
        self.base = 0  # absolute offset of buf[0]
        self.eof = False
        self.pos = 0
        self.skip_bom = skip_bom
        #: Items before this position are walked over, neither kept nor yielded.
        self.start = start
        #: Set when the walk stopped before the end of the file.
        self.unread: Unread | None = None
        #: The first item the walk could not read, when it stopped (``unread`` is set).
        self.stopped_at: Item | None = None

    # --- buffer ------------------------------------------------------------------------------

    @property
    def offset(self) -> int:
        return self.base + self.i

    def _fill(self) -> bool:
        """Read one more block (dropping what was consumed); False at the end of the file."""
        if self.eof:
            return False
        block = self.f.read(_BLOCK)
        if not block:
            self.eof = True
            return False
        self.base += self.i
        self.buf = self.buf[self.i :] + block
        self.i = 0
        return True

    def _skip_bom(self) -> None:
        while len(self.buf) < len(BOM) and self._fill():
            pass
        if self.buf.startswith(BOM):
            self.i = len(BOM)

    def _peek(self) -> int | None:
        """The next non-blank byte (not consumed), or None at the end of the file."""
        while True:
            m = _NON_WS.search(self.buf, self.i)
            if m:
                self.i = m.start()
                return self.buf[self.i]
            self.i = len(self.buf)
            if not self._fill():
                return None

    def _expect(self, allowed: bytes, where: str) -> int:
        c = self._peek()
        if c is None:
            raise _End(self.offset, RejectReason.TRUNCATED_DOCUMENT, f"the document ends {where}")
        if c not in allowed:
            shown = ", ".join(repr(chr(a)) for a in allowed)
            raise _End(
                self.offset,
                RejectReason.MALFORMED_DOCUMENT,
                f"expected {shown} {where}, found {bytes([c])!r}",
            )
        self.i += 1
        return c

    # --- values ------------------------------------------------------------------------------

    def _value(self, keep: bool) -> tuple[bytes | None, RejectReason | None, str | None]:
        """Walk one value from the current position; its text when ``keep`` and it is in bounds.

        Raises :class:`_End` (truncated) when the file ends inside it."""
        start = self.offset
        c = self._peek()
        if c is None:
            raise _End(start, RejectReason.TRUNCATED_DOCUMENT, "the document ends where a value was due")
        kept: bytearray | None = bytearray() if keep else None
        seg = self.i
        depth = deepest = 0
        in_string = False
        size = 0

        def spill(upto: int) -> None:
            nonlocal kept, size
            size += upto - seg
            if kept is not None:
                if size > self.max_bytes:
                    kept = None
                else:
                    kept += self.buf[seg:upto]

        if c == ord('"'):
            in_string = True
            self.i += 1
        elif c in b"[{":
            depth = deepest = 1
            self.i += 1
        else:  # a scalar: runs to the next delimiter
            while True:
                self.i = _end(_SCALAR, self.buf, self.i)
                if self.i < len(self.buf):
                    break
                spill(self.i)
                seg = 0
                if not self._fill():
                    seg = self.i
                    break
            spill(self.i)
            return self._done(kept, size, deepest, start)
        while True:
            if in_string:
                j = _end(_STRING_TAIL, self.buf, self.i)
                if j < len(self.buf) and self.buf[j] == ord('"'):
                    in_string = False
                    self.i = j + 1
                    if depth == 0:
                        break
                    continue
                self.i = j  # the end of the buffer, or a backslash whose escaped byte is not read yet
            else:
                # Whole shallow containers may pass at once while they cannot break the limit.
                run = _RUN_SHALLOW if depth + _SHALLOW <= self.max_depth else _RUN
                j = _end(run, self.buf, self.i)
                if j < len(self.buf):
                    c = self.buf[j]
                    self.i = j + 1
                    if c == ord('"'):
                        in_string = True
                    elif c in b"[{":
                        depth += 1
                        deepest = max(deepest, depth)
                    else:
                        depth -= 1
                        if depth == 0:
                            break
                    continue
                self.i = j
            spill(self.i)
            seg = self.i
            if not self._fill():
                raise _End(
                    start,
                    RejectReason.TRUNCATED_DOCUMENT,
                    "the document ends inside this record: the file is cut short "
                    "(or a string or bracket in the record is never closed)",
                )
            seg = self.i  # _fill rebased the buffer: what is left starts at i
        spill(self.i)
        return self._done(kept, size, deepest, start)

    def _done(
        self, kept: bytearray | None, size: int, deepest: int, start: int
    ) -> tuple[bytes | None, RejectReason | None, str | None]:
        if size > self.max_bytes:
            detail = f"the record at byte {start:,} is {size:,} bytes; the limit is {self.max_bytes:,}"
            return None, RejectReason.PAYLOAD_TOO_LARGE, detail
        if deepest > self.max_depth:
            detail = f"the record at byte {start:,} nests {deepest:,} levels; the limit is {self.max_depth}"
            return None, RejectReason.TOO_DEEP, detail
        return (bytes(kept) if kept is not None else None), None, None

    def _key(self) -> bytes:
        data, reason, _ = self._value(keep=True)
        if data is None or reason is not None or not data.startswith(b'"') or len(data) > _MAX_KEY_BYTES:
            raise _End(self.offset, RejectReason.MALFORMED_DOCUMENT, "an object key is not a short string")
        return data

    # --- the walk ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Item]:
        if self.skip_bom:
            self._skip_bom()
        try:
            yield from self._walk(0)
            trailing = self._peek()
            if trailing is not None:
                raise _End(
                    self.offset,
                    RejectReason.TRAILING_DATA,
                    "a second JSON document (or other data) follows the first; split the file in two",
                )
        except _End as end:
            size = self._size() - end.offset
            self.unread = Unread(end.offset, size, end.reason.value, end.detail)
            self.stopped_at = Item(
                self.pos, end.offset, None, end.reason, f"{end.detail} (item {self.pos}, byte {end.offset:,})"
            )

    def _size(self) -> int:
        """The file's size: from a seek to its end, else by reading on (bounded blocks)."""
        try:
            return max(self.f.seek(0, 2), self.base + len(self.buf))
        except (OSError, ValueError):
            while self._fill():
                self.i = len(self.buf)
            return self.base + len(self.buf)

    def _walk(self, level: int) -> Iterator[Item]:
        """The value at the current position, at ``level`` of the prefix path."""
        if level == len(self.path):
            self._peek()
            start = self.offset
            wanted = self.pos >= self.start
            data, reason, detail = self._value(keep=wanted)
            if wanted:
                yield Item(self.pos, start, data, reason, detail)
            self.pos += 1
            return
        c = self._peek()
        step = self.path[level]
        if step == "item" and c == ord("["):
            self.i += 1
            if self._peek() == ord("]"):
                self.i += 1
                return
            while True:
                yield from self._walk(level + 1)
                if self._expect(b",]", f"after item {self.pos - 1}") == ord("]"):
                    return
        if step != "item" and c == ord("{"):
            self.i += 1
            if self._peek() == ord("}"):
                self.i += 1
                return
            name = b'"' + step.encode() + b'"'
            while True:
                key = self._key()
                self._expect(b":", "after an object key")
                if key == name:
                    yield from self._walk(level + 1)
                else:
                    self._value(keep=False)
                if self._expect(b",}", "after an object member") == ord("}"):
                    return
        self._value(keep=False)  # not what the prefix goes through: nothing under it


#: What :func:`members` gives for a member whose value is an array or an object (not read).
ARRAY = "[...]"
OBJECT = "{...}"


def members(f: IO[bytes]) -> Iterator[tuple[str, Any]]:
    """``(key, value)`` of each member of a top-level object, in order, without building nested
    values: a scalar's value (a string up to 64 KB), :data:`ARRAY` or :data:`OBJECT` for a
    container (walked over, bounded). Stops quietly where the document breaks or is not an object."""
    walker = Splitter(f, "")
    try:
        walker._skip_bom()
        if walker._peek() != ord("{"):
            return
        walker.i += 1
        if walker._peek() == ord("}"):
            return
        while True:
            key = json.loads(walker._key())
            walker._expect(b":", "after an object key")
            c = walker._peek()
            if c is not None and c in b"[{":
                yield key, ARRAY if c == ord("[") else OBJECT
                walker._value(keep=False)
            else:
                data, _, _ = walker._value(keep=True)
                yield key, _scalar(data)
            if walker._expect(b",}", "after an object member") == ord("}"):
                return
    except (_End, ValueError):
        return


def _scalar(data: bytes | None) -> Any:
    if data is None or len(data) > _MAX_KEY_BYTES:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def depth_exceeds(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether a JSON text nests deeper than ``limit`` (strings skipped; cheap when it has few
    brackets, which is the usual case)."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth = 0
    i = 0
    n = len(data)
    while i < n:
        i = _end(_RUN, data, i)
        if i >= n:
            return False
        c = data[i]
        i += 1
        if c == ord('"'):  # an unterminated string: no brackets after it count
            return False
        if c in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False
