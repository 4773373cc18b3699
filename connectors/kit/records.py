"""The record path, for dumps that are documents, archives or tables rather than flat JSON records.

Connectors whose dumps need walking (ChatGPT conversation trees, Letta agent files, Zep API pages,
CSV and Markdown exports, SQLite history tables, zip archives) read them in Python and emit one
*staged row* per record: a plain dict with the record's position ``pos``, its source text ``raw``
and the canonical fields they know (``normalize.STAGED_COLUMNS``; what is missing is null, the
``scope_<field>`` values for the scope template included). :func:`run` batches the rows and hands
each batch to the normalization every connector shares (``normalize.finish``): identity and
content hashes, the scope, the shared checks and the split of rejects.

A record a connector cannot use becomes a :func:`reject` row. The field helpers here raise
:class:`Rejected` with a reason code and a detail that names the field and the value; the
connector catches it per record and emits the reject, so one bad record never costs the others.

``pos`` is the record's 0-based ordinal in the dump in reading order (a CSV data row, a JSON Lines
line, the n-th node walked in a document); the detail names the place in the document when that
says more (conversation and node id, block label…).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any, Literal

import polars as pl
import pyarrow as pa
from fsspec import AbstractFileSystem

from connectors.base import Batch, ReadOptions, Unread, scope_placeholders
from connectors.errors import DumpFormatError
from connectors.kit import bounded, normalize
from connectors.kit.jsonscan import Item, Splitter
from connectors.schema import EPISODE_SCHEMA, MAX_DEPTH, MAX_RECORD_BYTES, RejectReason

BOM = b"\xef\xbb\xbf"

#: Staged columns take the canonical types, except that enums are plain text until ``finish``
#: checks them.
_STAGED_TYPES: dict[str, pl.DataType] = {
    "pos": pl.Int64(),
    "raw": pl.String(),
    "reason": pl.String(),
    "detail": pl.String(),
    **{
        c: pl.String() if isinstance(EPISODE_SCHEMA[c], pl.Enum) else EPISODE_SCHEMA[c]
        for c in normalize.STAGED_COLUMNS
    },
}

Row = dict[str, Any]
#: Key of a staged row that carries an :class:`Unread` span to the batch (never a column).
UNREAD_KEY = "_unread"


class Rejected(Exception):
    """One record cannot be used: why (a reason code) and a detail naming the field and value."""

    def __init__(self, reason: RejectReason, detail: str, *, unread: Unread | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        #: Bytes of the dump not read because of this problem (a document that breaks off).
        self.unread = unread


def reject(pos: int, raw: str | None, reason: RejectReason, detail: str) -> Row:
    """A staged row that is a reject from the start."""
    return {"pos": pos, "raw": raw, "reason": reason.value, "detail": detail}


def rejected(pos: int, raw: str | None, exc: Rejected) -> Row:
    row = reject(pos, raw, exc.reason, exc.detail)
    if exc.unread is not None:
        row[UNREAD_KEY] = exc.unread
    return row


#: A batch is also cut when its rows' text reaches this size: Python rows of large records (a
#: ChatGPT node is ~5 KB) cost several times their text, and rows, not bytes, bound ``batch_rows``.
BATCH_TEXT_BYTES = 32 << 20


def run(
    system: str, rows: Iterable[Row], fs: AbstractFileSystem, path: str, options: ReadOptions
) -> Iterator[Batch]:
    """Normalize the staged rows of one dump, ``options.batch_rows`` (or ``BATCH_TEXT_BYTES``) at a time."""
    uri = fs.unstrip_protocol(path)
    ingested_at = datetime.now(UTC)
    schema = pl.Schema(
        _STAGED_TYPES | {f"scope_{name}": pl.String() for name in scope_placeholders(options.scope_template)}
    )
    buffer: list[Row] = []
    size = 0
    unread: list[Unread] = []
    for row in rows:
        if UNREAD_KEY in row:
            unread.append(row.pop(UNREAD_KEY))
        buffer.append(row)
        size += len(row.get("raw") or "") + len(row.get("content") or "")
        if len(buffer) >= options.batch_rows or size >= BATCH_TEXT_BYTES:
            yield _batch(buffer, schema, system, options, uri, ingested_at)
            buffer, size = [], 0
    if buffer:
        yield _batch(buffer, schema, system, options, uri, ingested_at)
    if unread:
        yield normalize.unread_batch(unread)


def _batch(
    rows: list[Row], schema: pl.Schema, system: str, options: ReadOptions, uri: str, ingested_at: datetime
) -> Batch:
    staged = pl.DataFrame(
        [_column(name, dtype, [row.get(name) for row in rows]) for name, dtype in schema.items()]
    )
    raw = staged.select("pos", "raw").to_arrow()
    return normalize.finish(staged.drop("raw"), raw, system, options, uri, ingested_at)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _column(name: str, dtype: pl.DataType, values: list[Any]) -> pl.Series:
    """One staged column, built the fast way for its type (Polars' per-value conversion of lists
    and datetimes costs more than the rest of a batch)."""
    if isinstance(dtype, pl.List):
        offsets, flat, nulls = [0], [], []
        for value in values:
            nulls.append(value is None)
            if value is not None:
                flat.extend(value)
            offsets.append(len(flat))
        array = pa.ListArray.from_arrays(
            pa.array(offsets, pa.int32()), pa.array(flat, pa.large_string()), mask=pa.array(nulls)
        )
        return pl.Series(name, array)
    if isinstance(dtype, pl.Datetime):
        micros = [None if v is None else (v - _EPOCH) // _MICROSECOND for v in values]
        return pl.Series(name, micros, dtype=pl.Int64).cast(dtype)
    if name == "metadata":
        values = [v if v is None or isinstance(v, str) else dumps(v) for v in values]
    return pl.Series(name, values, dtype=dtype)


_MICROSECOND = timedelta(microseconds=1)


# --- field helpers -----------------------------------------------------------------------------


def dumps(value: Any) -> str:
    """Compact JSON text, non-ASCII kept as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def json_type(value: Any) -> str:
    """The JSON name of a Python value parsed from JSON, for details."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def text(record: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    """A string field; a value of another JSON type is ``wrong_type``, a missing required one
    ``missing_field``. Numbers used as ids are taken as their text only through :func:`ident`."""
    value = record.get(key)
    if value is None:
        if required:
            raise Rejected(RejectReason.MISSING_FIELD, f"field {key} is missing")
        return None
    if not isinstance(value, str):
        raise Rejected(
            RejectReason.WRONG_TYPE, f"field {key} is a JSON {json_type(value)}, expected a string"
        )
    return value


def ident(record: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    """An id field: a string, or an integer taken as its decimal text."""
    value = record.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return text(record, key, required=required)


def str_list(value: Any, field: str) -> list[str] | None:
    """A list of strings; null stays null, anything else is ``wrong_type``."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        kind = json_type(value) if not isinstance(value, list) else "array with non-string items"
        raise Rejected(RejectReason.WRONG_TYPE, f"field {field} is a JSON {kind}, expected a list of strings")
    return value


#: Go's ``time.Time{}``: an unset time, never a real one (no dump holds events of year 1).
GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
_FRACTION = re.compile(r"(\.\d{6})\d+")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_UNIT_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
TimeUnit = Literal["s", "ms", "us"]


def parse_time(value: Any, field: str, *, unit: TimeUnit | None = None) -> datetime | None:
    """A timestamp in UTC, or None for null.

    Text is ISO 8601 (``Z``, offsets, naive = UTC, date-only = midnight UTC, more than six
    fractional digits cut to microseconds). Go's zero time (``0001-01-01T00:00:00Z``, what Zep
    and other Go servers write for an unset time) is null, like a missing time. Numbers are
    accepted only when the connector states their ``unit`` for this field (``s``, ``ms``, ``us``),
    as numbers or as digit strings; the unit is never guessed from the magnitude. Anything else is
    ``bad_timestamp`` naming the field.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise Rejected(RejectReason.BAD_TIMESTAMP, f"field {field}: {value!r} is not a timestamp")
    if isinstance(value, str) and unit is not None and _NUMBER.fullmatch(value.strip()):
        value = float(value) if "." in value else int(value)
    if isinstance(value, int | float):
        if unit is None:
            raise Rejected(
                RejectReason.BAD_TIMESTAMP,
                f"field {field}: {value!r} is a number; expected ISO 8601 text (a unit is never guessed)",
            )
        return _from_epoch(value, field, unit)
    if not isinstance(value, str):
        raise Rejected(
            RejectReason.BAD_TIMESTAMP, f"field {field} is a JSON {json_type(value)}, expected a timestamp"
        )
    parsed = parse_iso(value, field)
    return None if parsed == GO_ZERO_TIME else parsed


def parse_iso(value: str, field: str) -> datetime:
    textual = _FRACTION.sub(r"\1", value.strip())
    try:
        if len(textual) == 10:
            day = date.fromisoformat(textual)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(textual)
    except ValueError:
        raise Rejected(
            RejectReason.BAD_TIMESTAMP, f"field {field}: {value!r} is not an ISO 8601 timestamp"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _from_epoch(value: float, field: str, unit: TimeUnit) -> datetime:
    if isinstance(value, float) and not math.isfinite(value):
        raise Rejected(RejectReason.BAD_TIMESTAMP, f"field {field}: {value!r} is not a timestamp")
    micros = round(value * _UNIT_SECONDS[unit] * 1_000_000)
    try:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    except OverflowError:
        raise Rejected(
            RejectReason.BAD_TIMESTAMP, f"field {field}: {value!r} is out of range as epoch {unit}"
        ) from None


def metadata(source_meta: Any, rest: Mapping[str, Any]) -> str:
    """Canonical metadata text (the convention of ``sql.metadata_sql``): the source's metadata
    object at top level, every other field the record had under ``_source`` (nulls dropped).
    Source metadata that is not an object, or that uses ``_source`` itself, goes whole under
    ``_source.metadata``."""
    source = {k: v for k, v in rest.items() if v is not None}
    top: dict[str, Any] = {}
    if isinstance(source_meta, dict) and "_source" not in source_meta:
        top = dict(source_meta)
    elif source_meta is not None:
        source["metadata"] = source_meta
    return dumps({"_source": source, **top})


def record_object(value: Any, where: str) -> dict[str, Any]:
    """``value`` as a record: a JSON object (else ``not_an_object``) nesting no deeper than the
    limit (else ``too_deep``); ``where`` names it in the detail."""
    if not isinstance(value, dict):
        raise Rejected(RejectReason.NOT_AN_OBJECT, f"{where} is a JSON {json_type(value)}, not an object")
    check_depth(value, where)
    return value


def check_depth(value: Any, where: str, limit: int = MAX_DEPTH) -> None:
    """``too_deep`` if ``value`` nests deeper than ``limit`` (checked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise Rejected(RejectReason.TOO_DEEP, f"{where} nests deeper than {limit} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))


# --- reading -----------------------------------------------------------------------------------

DumpKind = Literal["empty", "zip", "gzip", "zstd", "bzip2", "xz", "sqlite", "json", "text"]
_SNIFF_BYTES = 1 << 12


def sniff(fs: AbstractFileSystem, path: str) -> DumpKind:
    """What a dump is, from its first bytes (never from its name): an archive, a SQLite database,
    a compressed file (gzip, zstd, bzip2, xz), JSON (starts with ``[``, ``{`` or ``"``, after a BOM
    and whitespace), other text, or empty."""
    with fs.open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"SQLite format 3\x00"):
        return "sqlite"
    packed = bounded.compression(head)
    if packed is not None:
        return packed  # type: ignore[return-value]  # one of the DumpKind compressions
    stripped = head.removeprefix(BOM).lstrip()
    if not stripped:
        return "empty"
    return "json" if stripped[:1] in (b"[", b"{", b'"') else "text"


class Malformed(Exception):
    """A JSON document breaks off or turns invalid; ``pos`` is the first item not read.

    ``reason`` says how (``truncated_document``, ``malformed_document``, ``trailing_data``) and
    ``unread`` which bytes of the file were not read; a reject made with :func:`broken` carries
    them to the import's account."""

    def __init__(
        self,
        pos: int,
        message: str,
        *,
        reason: RejectReason = RejectReason.MALFORMED_DOCUMENT,
        unread: Unread | None = None,
    ) -> None:
        super().__init__(f"after item {pos}: {message}")
        self.pos = pos
        self.reason = reason
        self.unread = unread

    def rejected(self, detail: str) -> Rejected:
        """This break as a :class:`Rejected` (with the bytes not read) under ``detail``."""
        return Rejected(self.reason, detail, unread=self.unread)


def broken(pos: int, exc: Malformed, detail: str) -> Row:
    """The reject for where a document breaks, carrying the bytes not read (see :func:`run`)."""
    return rejected(pos, None, exc.rejected(detail))


#: How deep an item of a streamed document may nest before it is refused unparsed: room for
#: records wrapped in a few levels (a ChatGPT conversation's nodes, whose own depth
#: :func:`check_depth` then judges one by one), and still far below what parsing can afford.
ITEM_DEPTH = 2 * MAX_DEPTH
#: The same for size: an item may wrap many records (a ChatGPT conversation holds its messages),
#: and is parsed in Python, not by DuckDB.
ITEM_BYTES = 8 * MAX_RECORD_BYTES


def json_items(f: IO[bytes], prefix: str, *, skip_bom: bool = True) -> Iterator[tuple[int, Any]]:
    """Stream ``(position, item)`` for the items under the ijson ``prefix`` (e.g. ``item``).

    Each item is cut out of the document by :class:`jsonscan.Splitter` before it is parsed, so
    an item that is too large, nests too deep, is not UTF-8 or not JSON comes as a
    :class:`Rejected` in place of its value, and the next item is read. Raises :class:`Malformed`
    where the document's structure breaks; everything before was yielded. Numbers come as int or
    float (never Decimal).
    """
    del skip_bom  # the splitter skips a BOM itself
    splitter = Splitter(f, prefix, max_depth=ITEM_DEPTH, max_bytes=ITEM_BYTES)
    for item in splitter:
        yield item.pos, _item_value(item)
    if splitter.stopped_at is not None:
        stop = splitter.stopped_at
        raise Malformed(
            stop.pos,
            stop.detail or "the document breaks",
            reason=stop.reason or RejectReason.MALFORMED_DOCUMENT,
            unread=splitter.unread,
        )


def first_value(f: IO[bytes], prefix: str) -> Any:
    """The first value under ``prefix`` (e.g. ``user``), reading no further than it; None when
    it is absent, or refused (too large, too deep, not JSON), or the document breaks before it."""
    for item in Splitter(f, prefix, max_depth=ITEM_DEPTH, max_bytes=ITEM_BYTES):
        value = _item_value(item)
        return None if isinstance(value, Rejected) else value
    return None


def _item_value(item: Item) -> Any:
    if item.data is None or item.reason is not None:
        return Rejected(item.reason or RejectReason.MALFORMED_DOCUMENT, item.detail or "unreadable item")
    try:
        textual = item.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(
            RejectReason.INVALID_UTF8,
            f"the record at byte {item.offset:,} is not valid UTF-8 (at byte {item.offset + exc.start:,})",
        )
    try:
        return json.loads(textual)
    except ValueError as exc:
        where = f"the record at byte {item.offset:,}"
        return Rejected(RejectReason.INVALID_JSON, f"{where} is not valid JSON: {exc}")


#: The largest document read and parsed at once (an agent file, one record saved alone): Python's
#: objects for it cost up to ~9x its bytes (measured: a 100 MB agent file of small messages peaks
#: at 933 MiB in a whole ingest, 250 MB at 1.9 GiB), so this keeps one inside the 1 GiB bound.
#: Larger ones fail with their size named (real agent files are a few MB).
WHOLE_DOCUMENT_BYTES = 96 << 20


def read_whole(fs: AbstractFileSystem, path: str, *, expected: str, max_bytes: int) -> bytes:
    """The bytes of a dump meant to be read at once; :class:`DumpFormatError` when it is larger
    than ``max_bytes`` (stream such dumps instead)."""
    size = fs.size(path)
    if size is not None and size > max_bytes:
        raise DumpFormatError(
            fs.unstrip_protocol(path),
            expected,
            f"a {size:,}-byte document (read at once up to {max_bytes:,})",
        )
    data: bytes = fs.cat_file(path)
    return data


def load_document(
    fs: AbstractFileSystem, path: str, *, expected: str, max_bytes: int = WHOLE_DOCUMENT_BYTES
) -> Any:
    """Parse a whole JSON document that is meant to be read at once (an agent file, one API page).

    A BOM is skipped; a document that is a JSON *string* holding JSON (Letta's double encoding)
    is decoded once more. Raises :class:`Rejected` (``malformed_document``, ``invalid_utf8``,
    ``too_deep``) when the text cannot be parsed, :class:`DumpFormatError` when it is larger than
    ``max_bytes`` (stream such dumps instead).
    """
    data = read_whole(fs, path, expected=expected, max_bytes=max_bytes).removeprefix(BOM)
    try:
        textual = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(
            RejectReason.INVALID_UTF8, f"document is not valid UTF-8 at byte {exc.start}"
        ) from None
    doc = _parse(textual)
    if isinstance(doc, str) and doc.lstrip()[:1] in ("{", "["):
        doc = _parse(doc)
    return doc


def _parse(textual: str) -> Any:
    try:
        doc = json.loads(textual)
    except RecursionError:
        raise Rejected(RejectReason.TOO_DEEP, f"document nests deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        if exc.pos >= len(textual.rstrip()):  # the text ends where more was due: a cut file
            raise Rejected(RejectReason.TRUNCATED_DOCUMENT, f"document ends mid-way: {exc}") from None
        raise Rejected(RejectReason.MALFORMED_DOCUMENT, f"document is not valid JSON: {exc}") from None
    except ValueError as exc:
        raise Rejected(RejectReason.MALFORMED_DOCUMENT, f"document is not valid JSON: {exc}") from None
    check_depth(doc, "document")
    return doc
