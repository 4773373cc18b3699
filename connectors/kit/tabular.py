"""Record readers shared by the Memsolus and Mnueron connectors: JSON, JSON Lines and CSV exports.

:func:`items` tells the dump's kind from its content (never its name) and yields, in reading
order, one :class:`Item` per record (a JSON object or a CSV row keyed by header name) or a staged
reject row (``records.reject``) for a record that could not even be parsed. The connector maps
each item to a staged row; ``records.run`` does the rest.

* JSON: a bare array or an envelope object holding the array under one of the connector's keys,
  streamed with ijson (``pos`` = the item's index); a document that breaks off ends with one
  ``malformed_document`` reject where it broke. A lone object with ``id`` and ``content`` is one
  record (a one-line JSON Lines file looks exactly like it).
* JSON Lines: one object per line (``pos`` = the 0-based line number; blank lines skipped).
* CSV: RFC 4180 (quoted fields with commas, doubled quotes, line breaks), columns read by header
  name in any order, an empty cell read as null. ``pos`` is the 0-based data row (blank lines are
  not rows); details name the physical line. Bytes that are not UTF-8 make only their own row an
  ``invalid_utf8`` reject; a row with the wrong number of fields is ``bad_value``; a quoted field
  that never closes ends the document (``malformed_document``).
* Other text goes to the connector's own reader (Memsolus Markdown), if it has one.
"""

from __future__ import annotations

import collections
import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from fsspec import AbstractFileSystem

from connectors.errors import DumpFormatError
from connectors.kit import bounded, sources
from connectors.kit.records import (
    Malformed,
    Rejected,
    Row,
    broken,
    check_depth,
    dumps,
    json_items,
    json_type,
    reject,
    rejected,
    sniff,
    str_list,
)
from connectors.schema import RejectReason

#: A CSV field may hold this many characters (far above the 100 KB content limit, so oversized
#: content is judged by the shared check); a longer one means a quote that never closes.
MAX_FIELD_CHARS = 8 << 20
#: A CSV row (one record, over one or more physical lines) may hold this many characters; a
#: longer one is one ``payload_too_large`` reject, read through without being held.
MAX_ROW_CHARS = bounded.MAX_LINE_BYTES
#: Columns a CSV header may name. Every supported export has under 30; spreadsheets stop at
#: 16,384. A wider file is a matrix, not a memory export, and each of its rows would become a
#: dict of that many keys, so it is refused (naming the count) rather than read.
MAX_COLUMNS = 4096
_KEPT_CHARS = bounded.KEPT_PREFIX_BYTES
_DRAIN_CHARS = 1 << 20
_HEAD_BYTES = 1 << 12

Kind = Literal["json", "csv", "markdown"]


@dataclass(frozen=True, slots=True)
class Item:
    """One parsed record: its position, source text, fields and the format it came in.

    ``fields`` holds JSON values for ``json``; for ``csv`` and ``markdown`` every value is text
    (or None for an empty cell), which the connector parses per field.
    """

    pos: int
    raw: str
    fields: dict[str, Any]
    kind: Kind


#: A column the CSV header must have, with the names it may go by (e.g. an alias).
Column = tuple[str, ...]
TextReader = Callable[[AbstractFileSystem, str], Iterator[Item | Row]]


def items(
    fs: AbstractFileSystem,
    path: str,
    *,
    expected: str,
    envelope_keys: tuple[str, ...],
    csv_columns: tuple[Column, ...],
    text_reader: tuple[Callable[[str], bool], TextReader] | None = None,
) -> Iterator[Item | Row]:
    """The records of one export, whatever its format (see the module docstring).

    ``text_reader`` is ``(claims, read)``: a text dump whose first non-blank line ``claims``
    accepts is read by ``read`` instead of as CSV.
    """
    uri = fs.unstrip_protocol(path)
    kind = sniff(fs, path)
    if kind == "empty":
        return
    if kind not in ("json", "text"):  # an archive, a database or a compressed file
        raise DumpFormatError(uri, expected, f"a {kind} file")
    if kind == "json":
        yield from _json(fs, path, uri, expected, envelope_keys)
    elif text_reader is not None and text_reader[0](_first_line(fs, path)):
        yield from text_reader[1](fs, path)
    else:
        yield from csv_items(fs, path, uri=uri, columns=csv_columns)


def _first_line(fs: AbstractFileSystem, path: str) -> str:
    with fs.open(path, "rb") as f:
        head = f.read(_HEAD_BYTES).removeprefix(sources.BOM)
    return next((line for line in head.decode("utf-8", "replace").splitlines() if line.strip()), "")


def _json(
    fs: AbstractFileSystem, path: str, uri: str, expected: str, envelope_keys: tuple[str, ...]
) -> Iterator[Item | Row]:
    head = sources.peek(fs, path)
    if head.shape == "empty":
        return
    if head.shape == "lines":
        yield from json_lines(fs, path)
        return
    prefix = "item"
    if head.shape == "object":
        key = next((k for k in envelope_keys if k in head.first_keys), None)
        if key is None and {"id", "content"} <= set(head.first_keys):
            prefix = ""  # one record: a single-line JSON Lines file, or one memory as a document
        elif key is None:
            keys = ", ".join(head.first_keys[:8]) or "no keys"
            raise DumpFormatError(uri, expected, f"a JSON object with keys: {keys}")
        else:
            prefix = f"{key}.item"
    with fs.open(path, "rb") as f:
        try:
            for pos, value in json_items(f, prefix):
                yield (
                    rejected(pos, None, value)
                    if isinstance(value, Rejected)
                    else _json_item(pos, value, None, f"item {pos}")
                )
        except Malformed as exc:
            yield broken(exc.pos, exc, f"document breaks off or turns invalid {exc}")


def json_lines(fs: AbstractFileSystem, path: str) -> Iterator[Item | Row]:
    """JSON Lines: one record per non-blank line, ``pos`` the 0-based line number."""
    for frame in sources.iter_json_lines(fs, path, batch_rows=4096):
        for pos, line, reason, detail in frame.iter_rows():
            if reason is not None:
                yield reject(pos, line, RejectReason(reason), f"line {pos + 1}: {detail}")
                continue
            try:
                value = json.loads(line)
            except RecursionError:
                yield reject(pos, line, RejectReason.TOO_DEEP, f"line {pos + 1} nests too deep to parse")
                continue
            except ValueError as exc:
                yield reject(pos, line, RejectReason.INVALID_JSON, f"line {pos + 1} is not valid JSON: {exc}")
                continue
            yield _json_item(pos, value, line, f"line {pos + 1}")


def _json_item(pos: int, value: Any, line: str | None, where: str) -> Item | Row:
    try:
        raw = line if line is not None else dumps(value)
    except RecursionError:
        raw = None
    if not isinstance(value, dict):
        return reject(
            pos, raw, RejectReason.NOT_AN_OBJECT, f"{where} is a JSON {json_type(value)}, expected an object"
        )
    try:
        check_depth(value, where)
    except Rejected as exc:
        return rejected(pos, raw, exc)
    assert raw is not None  # a record within the depth limit always serializes
    return Item(pos, raw, value, "json")


# --- CSV ---------------------------------------------------------------------------------------


def csv_items(
    fs: AbstractFileSystem, path: str, *, uri: str, columns: tuple[Column, ...]
) -> Iterator[Item | Row]:
    """The rows of an RFC 4180 CSV file as items keyed by header name (see the module docstring).

    The header must name every column in ``columns`` (any of a column's names will do), else
    this is not the system's CSV export: :class:`DumpFormatError`. So is a header of more than
    ``MAX_COLUMNS`` columns. A row longer than ``MAX_ROW_CHARS`` (one physical line or several)
    is one ``payload_too_large`` reject, read through without being held; reading resumes on the
    next line.
    """
    # The limit is process-wide; raising it only ever accepts more, so other readers are unaffected.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD_CHARS))
    with fs.open(path, "rb") as f:
        # Undecodable bytes survive as lone surrogates, so one bad row is one reject, not a crash.
        text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline="")
        source = _Lines(text, MAX_ROW_CHARS)
        header = _header(source, uri, columns)
        reader = csv.reader(source, strict=True)
        pos = 0
        while True:
            source.start_row()
            first_line = source.number + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except _TooLong as exc:
                yield reject(
                    pos,
                    escaped(exc.head) + "…",
                    RejectReason.PAYLOAD_TOO_LARGE,
                    f"line {first_line}: a row of at least {exc.chars:,} characters; one record may "
                    f"hold {MAX_ROW_CHARS:,}; row skipped",
                )
                reader = csv.reader(source, strict=True)  # the old one holds the cut row's fields
                pos += 1
                continue
            except csv.Error as exc:
                raw = escaped("".join(source.lines))
                if _unterminated(exc):
                    yield reject(
                        pos,
                        raw,
                        RejectReason.MALFORMED_DOCUMENT,
                        f"line {first_line}: a quoted field opened in this row never closes ({exc})",
                    )
                    return
                where = (
                    f"line {first_line}"
                    if source.number == first_line
                    else f"lines {first_line}-{source.number}"
                )
                yield reject(pos, raw, RejectReason.BAD_VALUE, f"{where}: not a valid CSV row: {exc}")
                pos += 1
                continue
            if not row:
                continue  # a blank line is not a row
            yield _csv_row(pos, row, "".join(source.lines), header, first_line)
            pos += 1


class _TooLong(Exception):
    """A row passed the length limit: its first characters, its length, its separators."""

    def __init__(self, head: str, chars: int, commas: int) -> None:
        super().__init__(f"{chars} characters")
        self.head, self.chars, self.commas = head, chars, commas


class _Lines:
    """The physical lines of a text for ``csv.reader``, keeping the current row's lines (its
    source text) and never more than ``limit`` characters of them: a longer row raises
    :class:`_TooLong` once its last physical line is read through (so reading can resume)."""

    def __init__(self, text: io.TextIOWrapper, limit: int) -> None:
        self.text = text
        self.limit = limit
        self.lines: list[str] = []
        self.number = 0  # physical lines read
        self._size = 0

    def start_row(self) -> None:
        self.lines.clear()
        self._size = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.text.readline(self.limit + 1)
        if not line:
            raise StopIteration
        self._size += len(line)
        if self._size <= self.limit:
            self.number += 1
            self.lines.append(line)
            return line
        head = (self.lines[0] if self.lines else line)[:_KEPT_CHARS]
        chars, commas = self._size, sum(part.count(",") for part in self.lines) + line.count(",")
        while not line.endswith(("\n", "\r")):  # read the rest of the physical line through
            line = self.text.readline(_DRAIN_CHARS)
            if not line:
                break
            chars, commas = chars + len(line), commas + line.count(",")
        self.number += 1
        self.start_row()
        raise _TooLong(head, chars, commas)


def text_lines(text: io.TextIOBase, *, limit: int) -> Iterator[tuple[str, int]]:
    """``(line, length)`` for each line of ``text`` (newline removed): a line longer than
    ``limit`` characters is read through without being held and comes as its first
    ``KEPT_PREFIX_BYTES`` characters with its full length, so a reader can reject it by size."""
    while line := text.readline(limit + 1):
        kept = line.rstrip("\r\n")
        size = len(kept)
        if size > limit:
            kept = kept[:_KEPT_CHARS]
            chunk = line
            while not chunk.endswith(("\n", "\r")) and (chunk := text.readline(_DRAIN_CHARS)):
                size += len(chunk.rstrip("\r\n"))
        yield kept, size


def _header(source: _Lines, uri: str, columns: tuple[Column, ...]) -> list[str]:
    wanted = ", ".join("|".join(names) for names in columns)
    expected = f"CSV export with the columns {wanted}"
    try:
        header = next((row for row in csv.reader(source, strict=True) if row), None)
    except csv.Error as exc:
        raise DumpFormatError(uri, expected, f"a header that is not valid CSV ({exc})") from None
    except _TooLong as exc:
        raise DumpFormatError(
            uri,
            expected,
            f"a header row of {exc.chars:,} characters, about {exc.commas + 1:,} columns "
            f"(at most {MAX_COLUMNS:,} columns are read)",
        ) from None
    if header is None:
        raise DumpFormatError(uri, expected, "no header row")
    if len(header) > MAX_COLUMNS:
        raise DumpFormatError(
            uri, expected, f"a header of {len(header):,} columns (at most {MAX_COLUMNS:,} are read)"
        )
    names = [escaped(name).strip().lower() for name in header]
    shown = ", ".join(names[:40])
    if len(shown) > 200 or len(names) > 40:
        shown = shown[:200] + "…"
    present = set(names)
    missing = [names_[0] for names_ in columns if not any(n in present for n in names_)]
    if missing:
        raise DumpFormatError(uri, expected, f"a header without {', '.join(missing)}: {shown}")
    repeated = sorted(n for n, times in collections.Counter(names).items() if times > 1)
    if repeated:
        raise DumpFormatError(uri, expected, f"a header naming {', '.join(repeated[:20])} twice: {shown}")
    return names


def _csv_row(pos: int, row: list[str], source: str, header: list[str], line: int) -> Item | Row:
    raw = source.rstrip("\r\n")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError as exc:
        return reject(
            pos,
            escaped(raw),
            RejectReason.INVALID_UTF8,
            f"line {line + raw.count(chr(10), 0, exc.start)}: row is not valid UTF-8; bytes kept escaped",
        )
    if len(row) != len(header):
        return reject(
            pos,
            raw,
            RejectReason.BAD_VALUE,
            f"line {line}: row has {len(row)} fields, the header has {len(header)}",
        )
    return Item(
        pos,
        raw,
        {name: (cell if cell != "" else None) for name, cell in zip(header, row, strict=True)},
        "csv",
    )


def _unterminated(exc: csv.Error) -> bool:
    message = str(exc)
    return "unexpected end of data" in message or "field larger than field limit" in message


def escaped(textual: str) -> str:
    """Text that may hold undecodable bytes (lone surrogates) with those bytes as ``\\xNN``."""
    return textual.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# --- field helpers for text cells --------------------------------------------------------------


def text_list(value: Any, field: str, *, sep: str) -> list[str] | None:
    """A list held in one text cell: a JSON array of strings, or items joined by ``sep``
    (trimmed, empty items dropped). An empty cell is null."""
    if value is None:
        return None
    stripped = value.strip()
    if stripped.startswith("["):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            raise Rejected(
                RejectReason.BAD_VALUE,
                f"field {field}: {_short(value)} starts like a JSON array but is not one",
            ) from None
        return str_list(parsed, field)
    return [part.strip() for part in stripped.split(sep) if part.strip()]


def json_text(value: Any, field: str) -> Any:
    """A JSON value held in one text cell (e.g. ``metadata``); an empty cell is null."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except RecursionError:
        raise Rejected(RejectReason.TOO_DEEP, f"field {field} nests too deep to parse") from None
    except ValueError:
        raise Rejected(RejectReason.BAD_VALUE, f"field {field}: {_short(value)} is not valid JSON") from None
    check_depth(parsed, f"field {field}")
    return parsed


def _short(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


def staged(records: Iterator[Item | Row], stage: Callable[[Item], Row]) -> Iterator[Row]:
    """The connector's staged row for each item; a reject row passes through, and an item its
    ``stage`` refuses (:class:`Rejected`) becomes one."""
    for item in records:
        if not isinstance(item, Item):
            yield item
            continue
        try:
            yield stage(item)
        except Rejected as exc:
            yield rejected(item.pos, item.raw, exc)
