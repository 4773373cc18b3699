"""Streaming record sources: JSON documents and JSON Lines, read through fsspec in bounded chunks.

Every source produces the same *raw* relation ``(pos, raw, reason, detail)``: the record's
position in the dump, its JSON text, and a reason code if the record was unusable before it could
even be parsed (invalid UTF-8, a document that breaks off). A connector's SQL projects the raw
relation into canonical columns; DuckDB does the JSON parsing, vectorized, and Polars takes over
from there (see ``_normalize``).

Fast path: a dump that is one JSON array is read by DuckDB's ``read_json_objects`` directly from
the file (local or any fsspec filesystem), streaming. Everything else, and any array DuckDB cannot
finish, goes through ``ijson`` (C backend) or a line splitter, in chunks of ``batch_rows``.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
import ijson
import polars as pl
import pyarrow as pa
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from connectors.schema import RejectReason

BOM = b"\xef\xbb\xbf"
_PEEK_BYTES = 1 << 16
_BLOCK_BYTES = 8 << 20
_SPLIT_ROWS = 16_384
#: DuckDB's working-memory cap per read; it streams, so this bounds the parser, not the dump.
DUCKDB_MEMORY_LIMIT = "256MB"

Shape = Literal["array", "object", "lines", "empty"]

RAW_SCHEMA = pl.Schema({"pos": pl.Int64, "raw": pl.String, "reason": pl.String, "detail": pl.String})


@dataclass(frozen=True)
class Peek:
    shape: Shape
    bom: bool
    #: Top-level keys of the first object, when the dump starts with one (envelope detection).
    first_keys: tuple[str, ...] = ()


def duckdb_connection() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"memory_limit": DUCKDB_MEMORY_LIMIT})
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
    except ValueError:
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
    except ValueError:
        return False


def _top_level_keys(head: bytes) -> tuple[str, ...]:
    keys: list[str] = []
    try:
        for prefix, event, value in ijson.parse(head):
            if prefix == "" and event == "map_key":
                keys.append(value)
    except ijson.JSONError:
        pass  # the head is cut mid-document; the keys seen so far are what we need
    return tuple(keys)


class SqlRunner:
    """Runs one connector's projection SQL over raw relations and streams the results."""

    def __init__(self, select_sql: str, batch_rows: int) -> None:
        self.select_sql = select_sql
        self.batch_rows = batch_rows
        self.con = duckdb_connection()

    def close(self) -> None:
        self.con.close()

    def over_chunks(
        self, chunks: Iterable[pl.DataFrame | pa.Table]
    ) -> Generator[tuple[pa.Table, pa.Table], None, None]:
        """Yield (staged, raw) per chunk; the raw chunk is kept for the rejects' record text."""
        for chunk in chunks:
            table = chunk if isinstance(chunk, pa.Table) else chunk.to_arrow()
            # Several record batches let DuckDB spread the projection over its threads.
            table = pa.Table.from_batches(table.combine_chunks().to_batches(_SPLIT_ROWS))
            self.con.register("raw_chunk", table)
            try:
                staged = self.con.sql(self.select_sql.replace("{src}", "raw_chunk")).to_arrow_table()
            finally:
                self.con.unregister("raw_chunk")
            yield staged, table

    def over_array_file(
        self, fs: AbstractFileSystem, path: str
    ) -> Generator[tuple[pa.Table, pa.Table], None, None]:
        """DuckDB streams the array straight from the file; raises ScanError on bad JSON.

        The array scan is one thread in DuckDB, so it runs in a background thread of its own
        while the projection SQL works on the previous chunk: both cores stay busy.
        """
        scan = duckdb_connection()
        scan.execute("SET threads = 1")  # an array is one sequential scan; one thread, one buffer
        if isinstance(fs, LocalFileSystem):
            uri = path
        else:
            scan.register_filesystem(fs)
            uri = fs.unstrip_protocol(path)
        sql = (
            "SELECT json AS raw, NULL::VARCHAR AS reason, NULL::VARCHAR AS detail "
            f"FROM read_json_objects({_sql_str(uri)}, format='array')"
        )
        chunks = _prefetch(scan.sql(sql).to_arrow_reader(self.batch_rows))
        try:
            yield from self.over_chunks(chunks)
        finally:
            chunks.close()  # joins the scan thread before its connection goes away
            scan.close()


class ScanError(Exception):
    """DuckDB could not read the JSON document itself (malformed, truncated, too large)."""


def _prefetch(reader: pa.RecordBatchReader, depth: int = 1) -> Generator[pa.Table, None, None]:
    """Read ``reader`` in a background thread, ``depth`` chunks ahead; re-raise its errors here."""
    chunks: queue.Queue[pa.Table | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        pos = 0  # DuckDB keeps insertion order, so the position is a running count
        try:
            for batch in reader:
                if stop.is_set():
                    return
                positions = pa.array(range(pos, pos + batch.num_rows), pa.int64())
                pos += batch.num_rows
                chunks.put(pa.Table.from_batches([batch]).add_column(0, "pos", positions))
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


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def iter_json_items(
    fs: AbstractFileSystem, path: str, prefix: str, *, batch_rows: int, bom: bool, start: int = 0
) -> Iterator[pl.DataFrame]:
    """Stream the items under ``prefix`` (``item``, ``results.item``) of one JSON document.

    Items before ``start`` are skipped (they were already read by the fast path). A document that
    breaks off or turns invalid ends with one ``malformed_document`` reject at the position of the
    first item that could not be read.
    """
    pos = 0
    rows: list[tuple[int, str | None, str | None, str | None]] = []
    with fs.open(path, "rb") as f:
        if bom:
            f.read(len(BOM))
        items = ijson.items(f, prefix, use_float=True)
        while True:
            try:
                item = next(items)
            except StopIteration:
                break
            except (ijson.JSONError, UnicodeDecodeError, ValueError) as exc:
                rows.append((pos, None, RejectReason.MALFORMED_DOCUMENT.value, f"after item {pos}: {exc}"))
                break
            if pos >= start:
                rows.append((pos, _dumps(item), None, None))
                if len(rows) >= batch_rows:
                    yield _raw_frame(rows)
                    rows = []
            pos += 1
    if rows:
        yield _raw_frame(rows)


def _dumps(item: Any) -> str:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":"))


def iter_json_lines(fs: AbstractFileSystem, path: str, *, batch_rows: int) -> Iterator[pl.DataFrame]:
    """Stream a JSON Lines file in chunks; ``pos`` is the 0-based line number.

    Blank lines are not records and are skipped. A line that is not valid UTF-8 is kept (bytes
    escaped) with reason ``invalid_utf8``; JSON validity is checked by the connector's SQL.
    """
    positions: list[int] = []
    lines: list[bytes] = []
    line_no = 0
    carry = b""
    with fs.open(path, "rb") as f:
        first = True
        while True:
            block = f.read(_BLOCK_BYTES)
            if first and block.startswith(BOM):
                block = block[len(BOM) :]
            first = False
            if not block:
                break
            parts = (carry + block).split(b"\n")
            carry = parts.pop()
            for line in parts:
                if line.strip():
                    positions.append(line_no)
                    lines.append(line.rstrip(b"\r"))
                    if len(lines) >= batch_rows:
                        yield _lines_frame(positions, lines)
                        positions, lines = [], []
                line_no += 1
        if carry.strip():
            positions.append(line_no)
            lines.append(carry.rstrip(b"\r"))
    if lines:
        yield _lines_frame(positions, lines)


def _lines_frame(positions: list[int], lines: list[bytes]) -> pl.DataFrame:
    try:
        texts: list[str] = [line.decode("utf-8") for line in lines]
        bad: list[bool] = []
    except UnicodeDecodeError:
        texts, bad = [], []
        for line in lines:
            try:
                texts.append(line.decode("utf-8"))
                bad.append(False)
            except UnicodeDecodeError:
                texts.append(line.decode("utf-8", errors="backslashreplace"))
                bad.append(True)
    frame = pl.DataFrame(
        {"pos": pl.Series(positions, dtype=pl.Int64), "raw": pl.Series(texts, dtype=pl.String)}
    )
    if not bad:
        return frame.with_columns(reason=pl.lit(None, pl.String), detail=pl.lit(None, pl.String))
    invalid = pl.Series(bad)
    return frame.with_columns(
        reason=pl.when(invalid).then(pl.lit(RejectReason.INVALID_UTF8.value)),
        detail=pl.when(invalid).then(pl.lit("line is not valid UTF-8; bytes kept escaped")),
    )


def _raw_frame(rows: list[tuple[int, str | None, str | None, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=RAW_SCHEMA, orient="row")
