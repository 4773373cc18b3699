"""Streaming record sources: JSON documents and JSON Lines, read through fsspec in bounded chunks.

Every source produces the same *raw* relation ``(pos, raw, reason, detail)``: the record's
position in the dump, its JSON text, and a reason code if the record was unusable before it could
even be parsed (invalid UTF-8, a document that breaks off). DuckDB parses the records into the
connector's typed fields (:class:`RecordShape`), the connector's SQL projects them to staged
columns, and Polars takes over from there (see ``normalize``).

A dump that is one JSON array is read in tiers, each resuming where the one before stopped:
two DuckDB scans straight from the file, one per core (typed fields; record text and unknown-key
flag), zipped by position; then DuckDB splitting records that the projection parses one by one
(both bounded per record by ``maximum_object_size``); then ``jsonscan.Splitter``, which cuts each
record out before it is parsed, so a record too large, too deep or not UTF-8 is one reject, and
says where a broken document breaks and how many bytes were not read. Envelope objects go through
the splitter too, JSON Lines through a bounded line splitter, in chunks of ``batch_rows``.
"""

from __future__ import annotations

import collections
import contextlib
import io
import itertools
import json
import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from connectors.base import Unread
from connectors.kit.jsonscan import Item, Splitter, depth_exceeds, members
from connectors.kit.sql import UNDECIDED, duckdb_connect, quote_literal
from connectors.schema import MAX_DEPTH, MAX_RECORD_BYTES, RejectReason

BOM = b"\xef\xbb\xbf"
_PEEK_BYTES = 1 << 16
_BLOCK_BYTES = 8 << 20
_SPLIT_ROWS = 16_384
#: Rows per batch DuckDB hands back from a projection (one DuckDB vector).
_RESULT_ROWS = 2048
#: DuckDB's working-memory cap per read; it streams, so this bounds the parser, not the dump.
DUCKDB_MEMORY_LIMIT = "256MB"

#: DuckDB's bound on one record of a JSON array: past it the scan fails and the splitter, which
#: rejects the record alone, reads on from there.
_MAX_OBJECT = f"maximum_object_size={MAX_RECORD_BYTES}"

#: A chunk of records handed to DuckDB is cut at this many bytes of record text as well as at
#: ``batch_rows``: rows alone do not bound it when records are large.
CHUNK_BYTES = 4 << 20

Shape = Literal["array", "object", "lines", "empty"]

RAW_SCHEMA = pl.Schema({"pos": pl.Int64, "raw": pl.String, "reason": pl.String, "detail": pl.String})


@dataclass(frozen=True)
class Peek:
    shape: Shape
    bom: bool
    #: Top-level keys of the first object, when the dump starts with one (envelope detection).
    first_keys: tuple[str, ...] = ()


def duckdb_connection() -> duckdb.DuckDBPyConnection:
    con = duckdb_connect(memory_limit=DUCKDB_MEMORY_LIMIT)
    con.execute("SET enable_progress_bar = false")  # library code does not print
    con.execute("SET preserve_insertion_order = true")
    return con


def peek(fs: AbstractFileSystem, path: str) -> Peek:
    """Look at the head of a dump: array, one (envelope) object, JSON Lines, or empty."""
    with fs.open(path, "rb") as f:
        head = f.read(_PEEK_BYTES)
    bom = head.startswith(BOM)
    text = head[len(BOM) :] if bom else head
    stripped = text.lstrip()
    if not stripped:
        return Peek("empty", bom)
    if stripped[:1] == b"[":
        return Peek("array", bom)
    if stripped[:1] != b"{":
        return Peek("lines", bom)
    first_line, _, rest = stripped.partition(b"\n")
    try:
        first = json.loads(first_line)
    except (ValueError, RecursionError):  # RecursionError: a first line nested thousands deep
        # A pretty-printed object (one document), or JSON Lines whose first line is broken: in
        # JSON Lines some other unindented line near the top is a whole object.
        lines_named = path.lower().endswith((".jsonl", ".ndjson"))
        if lines_named or any(_is_object_line(line) for line in rest.split(b"\n")[:50]):
            return Peek("lines", bom)
        return Peek("object", bom, _top_level_keys(stripped))
    keys = tuple(first) if isinstance(first, dict) else ()
    if not rest.strip() and len(head) < _PEEK_BYTES:
        return Peek("object", bom, keys)
    return Peek("lines", bom, keys)


def _is_object_line(line: bytes) -> bool:
    if not line.startswith(b"{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


def _top_level_keys(head: bytes) -> tuple[str, ...]:
    """The keys of the object ``head`` starts (as far as the head goes), walked without building
    values: a head nested thousands deep costs nothing (ijson's prefixes grow with the depth)."""
    return tuple(key for key, _ in members(io.BytesIO(head)))


@dataclass(frozen=True)
class RecordShape:
    """What a connector reads from each JSON record: typed fields, and which keys it knows.

    ``struct`` maps field → DuckDB type (the ``json_transform`` structure and the ``read_json``
    columns); ``known`` lists every top-level key the connector maps or keeps, so a record with
    any other key is flagged ``has_unknown`` and keeps it exactly (see ``sql.metadata_sql``).
    """

    struct: dict[str, str]
    known: tuple[str, ...]
    #: Stricter types for the fast path's typed scan (e.g. TIMESTAMPTZ where ``struct`` has
    #: VARCHAR): parsed during the scan; a value that does not fit stops the fast path, and the
    #: slower tiers judge that record (a reject with its reason) from ``struct``'s types.
    scan_types: dict[str, str] = field(default_factory=dict)

    def unknown_keys_sql(self, raw: str) -> str:
        keys = ", ".join("'" + k.replace("'", "''") + "'" for k in sorted(self.known))
        return f"len(list_filter(json_keys({raw}), lambda k: k NOT IN ({keys}))) > 0"

    def prepare_sql(self, src: str) -> str:
        """raw relation → prepared relation ``(pos, raw, reason, detail, r, has_unknown)``."""
        struct = json.dumps(self.struct, separators=(",", ":"))
        return (
            "(SELECT pos, raw, reason, detail, r, "
            f"CASE WHEN r IS NOT NULL THEN {self.unknown_keys_sql('raw')} END AS has_unknown "
            "FROM (SELECT *, CASE WHEN reason IS NULL AND starts_with(ltrim(raw), '{') "
            f"THEN TRY(json_transform(raw, '{struct}')) END AS r FROM {src}))"
        )


Staged = tuple[pa.Table, pa.Table]


class SqlRunner:
    """Runs one connector's projection SQL over record chunks and streams the results.

    The projection reads ``{src}``, a prepared relation ``(pos, raw, reason, detail, r,
    has_unknown)`` where ``r`` is the record's typed fields. Each result comes with the raw chunk,
    kept only for the rejects' record text.
    """

    def __init__(self, select_sql: str, shape: RecordShape, batch_rows: int) -> None:
        self.select_sql = select_sql
        self.shape = shape
        self.batch_rows = batch_rows
        self.con = duckdb_connection()

    @property
    def scan_rows(self) -> int:
        """Rows per chunk the scans hand over: half a batch, so two chunks make one result."""
        return max(self.batch_rows // 2, 1)

    def close(self) -> None:
        self.con.close()

    def _stream(
        self, tables: Iterable[pa.Table], src: str, *, undecided_fails: bool = False
    ) -> Generator[Staged, None, None]:
        """Run the projection as one streaming query over ``tables`` (planned once, on all of
        DuckDB's threads), pairing each result batch with the input rows it came from.

        ``src`` is the relation over the input stream (``stream``). An error raised while
        producing the input (a ScanError from a reader) is re-raised here as itself.
        """
        inputs = iter(tables)
        first = next(inputs, None)
        if first is None:
            return
        schema = first.schema
        window: collections.deque[pa.Table] = collections.deque()
        failure: list[BaseException] = []

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                for table in itertools.chain([first], inputs):
                    table = table if table.schema == schema else table.cast(schema)
                    window.append(table)
                    yield from table.to_batches(_split_rows(table))
            except BaseException as exc:  # DuckDB would only see "error in Python stream"
                failure.append(exc)
                raise

        self.con.register("stream", pa.RecordBatchReader.from_batches(schema, batches()))
        results: pa.RecordBatchReader | None = None
        try:
            # DuckDB fetches small batches (it holds a whole result batch while filling it, so a
            # batch of large records would outgrow its memory); they are joined here up to
            # ``batch_rows`` or ``CHUNK_BYTES``, so a result costs what its rows hold.
            results = self.con.sql(self.select_sql.replace("{src}", src)).to_arrow_reader(_RESULT_ROWS)
            for staged in _joined(results, self.batch_rows):
                if undecided_fails and pc.any(pc.equal(staged["reason"], UNDECIDED)).as_py():
                    raise ScanError("a record needs its source text to be judged")
                yield staged, _rows_between(window, pc.min_max(staged["pos"]))
        except (duckdb.Error, OSError, pa.ArrowException):
            if failure:
                raise failure[0] from None
            raise
        finally:
            if results is not None:
                results.close()  # the connection refuses other work while a result is open
            self.con.unregister("stream")

    def over_chunks(self, chunks: Iterable[pl.DataFrame | pa.Table]) -> Generator[Staged, None, None]:
        """Raw chunks ``(pos, raw, reason, detail)``: DuckDB parses each record here."""
        tables = (c if isinstance(c, pa.Table) else c.to_arrow() for c in chunks)
        yield from self._stream(tables, self.shape.prepare_sql("stream"))

    def over_array_file(
        self, fs: AbstractFileSystem, path: str, *, start: int = 0
    ) -> Generator[Staged, None, None]:
        """The fast path for one JSON array: two sequential DuckDB scans, one per core.

        One scan reads the typed fields straight into columns (``read_json``), the other the raw
        record text and its unknown-key flag (``read_json_objects``); they are zipped by position.
        Raises ScanError where DuckDB cannot read on (malformed JSON, a field of the wrong type,
        a record that is not an object): the caller resumes after what was yielded.
        """
        uri = _duckdb_uri(fs, path)
        types = self.shape.struct | self.shape.scan_types
        columns = "{" + ", ".join(f"{quote_literal(k)}: {quote_literal(t)}" for k, t in types.items()) + "}"
        typed_sql = (
            f"SELECT * FROM read_json({quote_literal(uri)}, format='array', columns={columns}, {_MAX_OBJECT})"
        )
        # The record text crosses over only where it is needed: records with unknown keys.
        # (A rejected record's text is rebuilt from its typed fields, see record_text.)
        raw_sql = (
            "SELECT CASE WHEN u THEN json END AS raw, u AS has_unknown FROM ("
            f"SELECT json, {self.shape.unknown_keys_sql('json')} AS u "
            f"FROM read_json_objects({quote_literal(uri)}, format='array', {_MAX_OBJECT}))"
        )
        rows = self.scan_rows
        with _scan(fs, typed_sql, rows) as typed, _scan(fs, raw_sql, rows) as raw:
            prepared = (
                _prepared(fields, texts, pos).slice(max(start - pos, 0))
                for fields, texts, pos in _zip_by_position(typed, raw)
                if pos + texts.num_rows > start
            )
            yield from self._stream(prepared, "stream", undecided_fails=True)

    def over_array_objects(
        self, fs: AbstractFileSystem, path: str, *, start: int = 0
    ) -> Generator[Staged, None, None]:
        """One JSON array, records split by DuckDB and parsed by the projection; resumes at start."""
        sql = (
            "SELECT json AS raw, NULL::VARCHAR AS reason, NULL::VARCHAR AS detail "
            f"FROM read_json_objects({quote_literal(_duckdb_uri(fs, path))}, format='array', {_MAX_OBJECT})"
        )
        with _scan(fs, sql, self.scan_rows) as batches:
            yield from self.over_chunks(_numbered(batches, start))


def _split_rows(table: pa.Table) -> int:
    """Rows per batch DuckDB is handed: ``_SPLIT_ROWS``, fewer when its records are large (DuckDB
    works on a batch at once, and holds several copies of its text)."""
    if table.num_rows == 0 or table.nbytes <= CHUNK_BYTES:
        return _SPLIT_ROWS
    return max(1, min(_SPLIT_ROWS, table.num_rows * CHUNK_BYTES // table.nbytes))


def _joined(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Tables of consecutive batches, cut at ``rows`` rows or ``CHUNK_BYTES`` bytes."""
    pending: list[pa.RecordBatch] = []
    count = size = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        count += batch.num_rows
        size += batch.nbytes
        if count >= rows or size >= CHUNK_BYTES:
            yield pa.Table.from_batches(pending)
            pending, count, size = [], 0, 0
    if pending:
        yield pa.Table.from_batches(pending)


def _numbered(batches: Iterator[pa.Table], start: int) -> Iterator[pa.Table]:
    """Add the running position to each chunk; drop the records before ``start``."""
    pos = 0
    for batch in batches:
        n = batch.num_rows
        if pos + n > start:
            yield batch.add_column(0, "pos", _positions(pos, n)).slice(max(start - pos, 0))
        pos += n


def _prepared(fields: pa.Table, texts: pa.Table, pos: int) -> pa.Table:
    """The prepared relation for one aligned chunk of the two fast-path scans."""
    n = texts.num_rows
    return pa.table(
        {
            "pos": _positions(pos, n),
            "raw": texts["raw"],
            "reason": pa.nulls(n, pa.string()),
            "detail": pa.nulls(n, pa.string()),
            "r": pa.StructArray.from_arrays([_one_chunk(c) for c in fields.columns], fields.column_names),
            "has_unknown": texts["has_unknown"],
        }
    )


def _rows_between(window: collections.deque[pa.Table], bounds: pa.StructScalar) -> pa.Table:
    """The input rows with positions in ``bounds`` (min, max); inputs before it are released."""
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    while window and window[0]["pos"][-1].as_py() < lo:
        window.popleft()
    tables = [t for t in window if t["pos"][0].as_py() <= hi]
    return pa.concat_tables(tables)


def record_text(chunk: pa.Table, positions: pa.Array) -> pl.DataFrame:
    """``(pos, raw)`` for the given records of a chunk: their source text, or, where the fast
    path did not carry it (no unknown keys), their typed fields as JSON: every key they had."""
    if len(positions) == 0:
        return pl.DataFrame(schema={"pos": pl.Int64, "raw": pl.String})
    rows = chunk.filter(pc.is_in(chunk["pos"], value_set=positions))
    if "r" not in rows.column_names:
        return pl.DataFrame(rows.select(["pos", "raw"]))
    with duckdb_connect() as con:
        con.register("rows", rows)
        return con.sql("SELECT pos, coalesce(raw, to_json(r)::VARCHAR) AS raw FROM rows").pl()


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _positions(start: int, n: int) -> pa.Array:
    return pl.int_range(start, start + n, dtype=pl.Int64, eager=True).to_arrow()


def _duckdb_uri(fs: AbstractFileSystem, path: str) -> str:
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


@contextlib.contextmanager
def _scan(fs: AbstractFileSystem, sql: str, batch_rows: int) -> Iterator[Iterator[pa.Table]]:
    """Run ``sql`` on a connection of its own in a background thread, one chunk ahead."""
    con = duckdb_connection()
    con.execute("SET threads = 1")  # a JSON array is one sequential scan: one thread, one buffer
    con.execute("SET memory_limit = '128MB'")
    if not isinstance(fs, LocalFileSystem):
        con.register_filesystem(fs)
    try:
        reader = con.sql(sql).to_arrow_reader(batch_rows)
    except duckdb.Error as exc:  # DuckDB reads the first chunk eagerly
        con.close()
        raise ScanError(str(exc)) from exc
    chunks = _prefetch(reader)
    try:
        yield chunks
    finally:
        chunks.close()  # joins the scan thread before its connection goes away
        con.close()


def _zip_by_position(
    left: Iterator[pa.Table], right: Iterator[pa.Table]
) -> Iterator[tuple[pa.Table, pa.Table, int]]:
    """Pair two ordered streams of the same records into aligned chunks (no copy when the
    streams' chunks already line up, which is the usual case: both scans read equal chunks)."""
    lbuf: list[pa.Table] = []
    rbuf: list[pa.Table] = []
    pos = 0
    while True:
        if not lbuf:
            lbuf = [t for t in [next(left, None)] if t is not None]
        if not rbuf:
            rbuf = [t for t in [next(right, None)] if t is not None]
        if not lbuf or not rbuf:
            if lbuf or rbuf or next(left, None) is not None or next(right, None) is not None:
                raise ScanError("the two scans of the array disagree on its record count")
            return
        ltab, rtab = lbuf.pop(), rbuf.pop()
        n = min(ltab.num_rows, rtab.num_rows)
        if ltab.num_rows > n:
            lbuf.append(ltab.slice(n))
        if rtab.num_rows > n:
            rbuf.append(rtab.slice(n))
        yield ltab.slice(0, n), rtab.slice(0, n), pos
        pos += n


class ScanError(Exception):
    """DuckDB could not read the JSON document itself (malformed, truncated, too large)."""


def _prefetch(reader: pa.RecordBatchReader, depth: int = 1) -> Generator[pa.Table, None, None]:
    """Read ``reader`` in a background thread, ``depth`` chunks ahead; re-raise its errors here."""
    chunks: queue.Queue[pa.Table | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in reader:
                if stop.is_set():
                    return
                chunks.put(pa.Table.from_batches([batch]))
            chunks.put(None)
        except (duckdb.Error, OSError, pa.ArrowException) as exc:  # the reader's, surfaced by Arrow
            chunks.put(ScanError(str(exc)))
        except BaseException as exc:
            chunks.put(exc)

    worker = threading.Thread(target=produce, name="memport-json-scan", daemon=True)
    worker.start()
    try:
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                chunks.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


def iter_json_items(
    fs: AbstractFileSystem,
    path: str,
    prefix: str,
    *,
    batch_rows: int,
    bom: bool,
    start: int = 0,
    unread: list[Unread] | None = None,
) -> Iterator[pl.DataFrame]:
    """Stream the items under ``prefix`` (``item``, ``results.item``) of one JSON document.

    Items before ``start`` are skipped (they were already read by the fast path). Each item is cut
    out by :class:`jsonscan.Splitter` before anything parses it, so an item that is too large, too
    deep or not UTF-8 is one reject and the next item is read. Where the document's structure
    breaks, the first item not read is one reject (``truncated_document``, ``malformed_document``,
    ``trailing_data``) and the bytes not read are appended to ``unread``.
    """
    del bom  # the splitter skips a BOM itself
    rows: list[tuple[int, str | None, str | None, str | None]] = []
    with fs.open(path, "rb") as f:
        splitter = Splitter(f, prefix, start=start)
        size = 0
        for item in splitter:
            rows.append(_item_row(item))
            size += len(item.data or b"")
            if len(rows) >= batch_rows or size >= CHUNK_BYTES:
                yield _raw_frame(rows)
                rows, size = [], 0
    if splitter.stopped_at is not None:
        rows.append(_item_row(splitter.stopped_at))
    if splitter.unread is not None and unread is not None:
        unread.append(splitter.unread)
    if rows:
        yield _raw_frame(rows)


def _item_row(item: Item) -> tuple[int, str | None, str | None, str | None]:
    if item.reason is not None or item.data is None:
        reason = item.reason.value if item.reason is not None else None
        return item.pos, None, reason, item.detail
    try:
        return item.pos, item.data.decode("utf-8"), None, None
    except UnicodeDecodeError as exc:
        where = f"the record at byte {item.offset:,} is not valid UTF-8 (at byte {item.offset + exc.start:,})"
        return item.pos, item.data.decode("utf-8", "backslashreplace"), RejectReason.INVALID_UTF8.value, where


def iter_json_lines(fs: AbstractFileSystem, path: str, *, batch_rows: int) -> Iterator[pl.DataFrame]:
    """Stream a JSON Lines file in chunks; ``pos`` is the 0-based line number.

    Blank lines are not records and are skipped. A line that is not valid UTF-8 is kept (bytes
    escaped) with reason ``invalid_utf8``; a line longer than ``MAX_RECORD_BYTES`` is skipped to
    its end without being held (``payload_too_large``), one nesting deeper than ``MAX_DEPTH``
    is ``too_deep``; JSON validity is checked by the connector's SQL.
    """
    rows: list[_Line] = []
    size = 0
    for lines, nbytes in _line_blocks(fs, path):
        size += nbytes
        while lines:
            take = batch_rows - len(rows)
            rows += lines[:take]
            lines = lines[take:]
            if len(rows) >= batch_rows:
                yield _lines_frame(rows)
                rows, size = [], 0
        if size >= CHUNK_BYTES:  # a frame holds at most one block's lines (8 MB) and then some
            yield _lines_frame(rows)
            rows, size = [], 0
    if rows:
        yield _lines_frame(rows)


_Line = tuple[int, bytes | None, str | None, str | None]


def bounded_lines(fs: AbstractFileSystem, path: str) -> Iterator[_Line]:
    """``(line number, text, reason, detail)`` of every non-blank line, none held past the bound:
    a longer line is skipped to its end (``payload_too_large``), a deeper one is ``too_deep``."""
    for lines, _ in _line_blocks(fs, path):
        yield from lines


def _line_blocks(fs: AbstractFileSystem, path: str) -> Iterator[tuple[list[_Line], int]]:
    """The lines of each block read (see :func:`bounded_lines`), and the block's size."""
    line_no = 0
    carry = b""
    skipping = -1  # the length so far of an oversized line being skipped, else -1
    offset = 0  # of the start of ``carry`` in the file
    with fs.open(path, "rb") as f:
        first = True
        while True:
            block = f.read(_BLOCK_BYTES)
            if first and block.startswith(BOM):
                block = block[len(BOM) :]
                offset = len(BOM)
            first = False
            if not block:
                break
            out: list[_Line] = []
            if skipping >= 0:
                end = block.find(b"\n")
                if end < 0:
                    skipping += len(block)
                    continue
                out.append(_too_long(line_no, offset, skipping + end))
                line_no += 1
                offset += skipping + end + 1
                skipping = -1
                block = block[end + 1 :]
            parts = (carry + block).split(b"\n")
            carry = parts.pop()
            for line in parts:
                # The common case in two C calls: short enough, too few brackets to nest too deep.
                if len(line) <= MAX_RECORD_BYTES and line.count(b"[") + line.count(b"{") <= MAX_DEPTH:
                    if line.strip():
                        out.append((line_no, line.rstrip(b"\r"), None, None))
                else:
                    out.extend(_checked_line(line_no, offset, line))
                line_no += 1
                offset += len(line) + 1
            if len(carry) > MAX_RECORD_BYTES:
                skipping, carry = len(carry), b""
            yield out, len(block)
        if skipping >= 0:
            yield [_too_long(line_no, offset, skipping)], 0
        else:
            yield list(_checked_line(line_no, offset, carry)), len(carry)


def _checked_line(line_no: int, offset: int, line: bytes) -> Iterator[_Line]:
    if not line.strip():
        return
    if len(line) > MAX_RECORD_BYTES:
        yield _too_long(line_no, offset, len(line))
    elif depth_exceeds(line):
        detail = f"line {line_no + 1} (byte {offset:,}) nests deeper than {MAX_DEPTH} levels"
        yield line_no, None, RejectReason.TOO_DEEP.value, detail
    else:
        yield line_no, line.rstrip(b"\r"), None, None


def _too_long(line_no: int, offset: int, size: int) -> _Line:
    detail = f"line {line_no + 1} (byte {offset:,}) is {size:,} bytes; the limit is {MAX_RECORD_BYTES:,}"
    return line_no, None, RejectReason.PAYLOAD_TOO_LARGE.value, detail


def _lines_frame(rows: list[_Line]) -> pl.DataFrame:
    positions = [row[0] for row in rows]
    try:  # the common case: every line kept, and valid UTF-8
        texts: list[str | None] = [row[1].decode("utf-8") for row in rows]  # type: ignore[union-attr]
        frame = pl.DataFrame({"pos": positions, "raw": texts}, schema={"pos": pl.Int64, "raw": pl.String})
        return frame.with_columns(reason=pl.lit(None, pl.String), detail=pl.lit(None, pl.String))
    except (AttributeError, UnicodeDecodeError):
        pass
    texts, reasons, details = [], [], []
    for _, line, reason, detail in rows:
        if line is None:
            texts.append(None)
        else:
            try:
                texts.append(line.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(line.decode("utf-8", errors="backslashreplace"))
                reason = RejectReason.INVALID_UTF8.value
                detail = "line is not valid UTF-8; bytes kept escaped"
        reasons.append(reason)
        details.append(detail)
    return pl.DataFrame(
        {"pos": positions, "raw": texts, "reason": reasons, "detail": details}, schema=RAW_SCHEMA
    )


def _raw_frame(rows: list[tuple[int, str | None, str | None, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=RAW_SCHEMA, orient="row")
