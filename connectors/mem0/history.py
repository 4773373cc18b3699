"""Mem0 OSS history database (``~/.mem0/history.db``, PEER_FORMATS.md §1.3): one staged row per event.

The ``history`` table had three schemas, told apart by its columns:

* 2024-07: ``id, memory_id, prev_value, new_value, event, timestamp, is_deleted``;
* 2024-08 → 2025-05: ``id, memory_id, old_memory, new_memory, new_value, event, created_at,
  updated_at, is_deleted``;
* 2025-05 → now: ``id, memory_id, old_memory, new_memory, event, created_at, updated_at,
  is_deleted, actor_id, role`` (beside a ``messages`` table: the last ten chat messages per
  session, LLM context rather than memory history, so it is not read).

Every row is one version of the memory ``memory_id`` (its ``source_id``, so all versions of a
memory share one ``episode_id``) with its own idempotency key ``mem0-history:<row id>``: keyed by
memory, the store's in-dump deduplication would keep one version per memory and count the others
as duplicates, hiding the history this table exists to keep. ADD and UPDATE rows carry the new
text: the memory's last one is ``active``, every earlier one ``superseded`` (``superseded_at`` =
the next event's time). A DELETE row is a ``deleted`` tombstone holding the text it removed.

The event time (``timestamp``, else ``updated_at``, else ``created_at``: an UPDATE keeps the
memory's creation time in ``created_at``) becomes ``observed_at``, ``updated_at`` and
``recorded_at``, so the catalog's ``episodes`` view (latest ``updated_at`` first) shows each
memory's last event and ``episodes_as_of`` the version known at a time. A DELETE written without
any time (older mem0) takes its memory's previous event time as a lower bound, flagged in
``metadata._source.event_time`` = ``"previous event"``. The table holds no user, agent or run ids
(they live in the vector store): import it with a scope template without them. Where a dump that
has them (a ``get_all`` page) holds the same memory, its version stays current over these
identity-less ADD/UPDATE versions (the store's ``CURRENT_ORDER``); a DELETE still wins by time.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from connectors.errors import DumpFormatError
from connectors.kit import records
from connectors.kit.records import Rejected, Row
from connectors.kit.sql import quote_identifier
from connectors.schema import MAX_RECORD_BYTES, RejectReason

EXPECTED = "Mem0 OSS history database (a SQLite file with a history table)"
_COPY_BYTES = 1 << 20
#: An event time longer than this is no time (it is not carried through the window).
_TIME_BYTES = 1024
_EVENTS = ("ADD", "UPDATE", "DELETE")
#: Columns that became canonical fields (the rest is kept under ``metadata._source``).
_MAPPED = ("id", "memory_id", "actor_id", "role", "timestamp", "created_at", "updated_at")


@contextlib.contextmanager
def _local_copy(fs: AbstractFileSystem, path: str) -> Iterator[Path]:
    """A local path to the database: itself on local disk, else a streamed temporary copy."""
    if isinstance(fs, LocalFileSystem):
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="memport-sqlite-") as tmp:
        local = Path(tmp) / "history.db"
        with fs.open(path, "rb") as src, local.open("wb") as dst:
            shutil.copyfileobj(src, dst, _COPY_BYTES)
        yield local


def rows(fs: AbstractFileSystem, path: str) -> Iterator[Row]:
    """Every history row of the database at ``path``, as staged rows, in table (rowid) order."""
    uri = fs.unstrip_protocol(path)
    with _local_copy(fs, path) as local:
        con = sqlite3.connect(f"{local.resolve().as_uri()}?mode=ro", uri=True)
        con.text_factory = bytes  # decode per value: one bad value is one reject, not a crash
        try:
            yield from _read(con, uri)
        finally:
            con.close()


def _read(con: sqlite3.Connection, uri: str) -> Iterator[Row]:
    try:
        tables = [_text(r[0]) for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        columns = [_text(r[1]) for r in con.execute("PRAGMA table_info(history)")]
    except sqlite3.DatabaseError as exc:
        yield records.reject(0, None, RejectReason.MALFORMED_DOCUMENT, f"database is unreadable: {exc}")
        return
    if "history" not in tables:
        found = ", ".join(sorted(tables)) or "no tables"
        raise DumpFormatError(uri, EXPECTED, f"a SQLite database with tables: {found}")
    if not {"id", "memory_id", "event"} <= set(columns) or not (
        "timestamp" in columns or "created_at" in columns
    ):
        raise DumpFormatError(uri, EXPECTED, f"a history table with columns: {', '.join(columns)}")
    time_sql = "timestamp" if "timestamp" in columns else "coalesce(updated_at, created_at)"
    new_sql = "new_memory" if "new_memory" in columns else "new_value"
    yield from _rows(con, columns, time_sql, new_sql)


def _rows(con: sqlite3.Connection, columns: list[str], time_sql: str, new_sql: str) -> Iterator[Row]:
    """The history rows in rowid order, each with its memory's previous and next event.

    SQLite hands a value over whole, and a window sorts the rows it is given: the rows are measured
    first (``_bytes``), the window runs over narrow columns only (the memory id and the event
    time, each when of a sane size), and a row's values — or its predecessor's text — are read
    back by rowid only when they fit in one record. A row over that is one ``payload_too_large``
    reject, never fetched.
    """
    cap = MAX_RECORD_BYTES
    size = " + ".join(f"coalesce(length(CAST({quote_identifier(c)} AS BLOB)), 0)" for c in columns)
    jd = "CASE WHEN typeof(_t) = 'text' THEN julianday(_t) END"
    kept = ", ".join(
        f"CASE WHEN w._bytes <= {cap} THEN h.{(q := quote_identifier(c))} END AS {q}" for c in columns
    )
    sql = f"""
    WITH sized AS (SELECT rowid AS _rowid, {size} AS _bytes FROM history),
    narrow AS (
      SELECT s._rowid, s._bytes,
             CASE WHEN length(CAST(h.memory_id AS BLOB)) <= {cap} THEN h.memory_id END AS _mid,
             CASE WHEN length(CAST(({time_sql}) AS BLOB)) <= {_TIME_BYTES} THEN {time_sql} END AS _t
      FROM sized s JOIN history h ON h.rowid = s._rowid),
    w AS (
      SELECT _rowid, _bytes, _t AS _time, lead(_t) OVER o AS _next_time, lag(_t) OVER o AS _prev_time,
             lag(_rowid) OVER o AS _prev_rowid, lag(_bytes) OVER o AS _prev_bytes,
             lead(_rowid) OVER o IS NULL AS _last
      FROM narrow WINDOW o AS (PARTITION BY _mid ORDER BY ({jd}) IS NULL, {jd}, _rowid))
    SELECT {kept}, w._bytes, w._time, w._next_time, w._prev_time, w._prev_bytes, w._last,
           CASE WHEN w._prev_bytes <= {cap} THEN p.{new_sql} END AS _prev_text
    FROM w JOIN history h ON h.rowid = w._rowid LEFT JOIN history p ON p.rowid = w._prev_rowid
    ORDER BY w._rowid"""
    pos = 0
    try:
        cursor = con.execute(sql)
        names = [d[0] for d in cursor.description]
        for values in cursor:  # a row at a time: rows of up to a record's size each
            yield _row(pos, dict(zip(names, values, strict=True)))
            pos += 1
    except sqlite3.DatabaseError as exc:
        yield records.reject(
            pos, None, RejectReason.MALFORMED_DOCUMENT, f"database breaks off after row {pos}: {exc}"
        )


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _raw(row: dict[str, Any]) -> str:
    return records.dumps({k: _text(v) for k, v in row.items() if not k.startswith("_")})


def _field(row: dict[str, Any], key: str) -> Any:
    """A column's value, text decoded; invalid UTF-8 is a reject naming the column."""
    value = row.get(key)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejected(
                RejectReason.INVALID_UTF8, f"column {key} is not valid UTF-8 at byte {exc.start}"
            ) from None
    return value


def _string(row: dict[str, Any], key: str) -> str | None:
    value = _field(row, key)
    if value is not None and not isinstance(value, str):
        raise Rejected(RejectReason.WRONG_TYPE, f"column {key} holds a {type(value).__name__}, expected text")
    return value


def _time(row: dict[str, Any], key: str, field: str) -> datetime | None:
    return records.parse_time(_field(row, key), field)


def _row(pos: int, row: dict[str, Any]) -> Row:
    if row["_bytes"] > MAX_RECORD_BYTES:
        detail = (
            f"history row {pos + 1}: {row['_bytes']:,} bytes; one record may hold {MAX_RECORD_BYTES:,}; "
            "row skipped"
        )
        return records.reject(pos, None, RejectReason.PAYLOAD_TOO_LARGE, detail)
    try:
        return _stage(pos, row)
    except Rejected as exc:
        return records.rejected(pos, _raw(row), exc)


def _stage(pos: int, row: dict[str, Any]) -> Row:
    history_id = _string(row, "id")
    memory_id = _string(row, "memory_id")
    if history_id is None or memory_id is None:
        raise Rejected(
            RejectReason.MISSING_FIELD, f"column {'id' if history_id is None else 'memory_id'} is null"
        )
    event = _string(row, "event")
    if event not in _EVENTS:
        raise Rejected(RejectReason.BAD_VALUE, f"event {event!r} is not one of ADD|UPDATE|DELETE")
    time_field = (
        "timestamp" if "timestamp" in row else ("updated_at" if row.get("updated_at") else "created_at")
    )
    when = _time(row, "_time", time_field)
    inferred = when is None and event == "DELETE" and row.get("_prev_time") is not None
    if inferred:
        when = _time(row, "_prev_time", "previous event's time")
    old = _string(row, "old_memory") if "old_memory" in row else _string(row, "prev_value")
    new = _string(row, "new_memory") if "new_memory" in row else None
    if new is None and "new_value" in row:
        new = _string(row, "new_value")
    deleted = event == "DELETE" or _field(row, "is_deleted") in (1, "1", "true", "True")
    if event == "DELETE":
        if old is None and (row["_prev_bytes"] or 0) > MAX_RECORD_BYTES:
            raise Rejected(
                RejectReason.PAYLOAD_TOO_LARGE,
                f"the text it deletes (the memory's previous row, {row['_prev_bytes']:,} bytes) is larger "
                f"than one record may hold ({MAX_RECORD_BYTES:,})",
            )
        content = old if old is not None else _string(row, "_prev_text")
        status, superseded_at = "deleted", when
    else:
        content = new
        last = bool(row.get("_last"))
        status = "deleted" if deleted else ("active" if last else "superseded")
        superseded_at = when if deleted else None if last else _next_time(row)
    created = _time(row, "created_at", "created_at") if "created_at" in row else when
    kept = {k: _field(row, k) for k in row if not k.startswith("_") and k not in _MAPPED}
    kept["history_id"] = history_id
    for key in ("new_memory", "new_value", "old_memory", "prev_value"):
        if kept.get(key) == content:
            kept.pop(key)  # the episode's content already
    if inferred:
        kept["event_time"] = "previous event"
    return {
        "pos": pos,
        "raw": _raw(row),
        "idempotency_key": f"mem0-history:{history_id}",
        "source_id": memory_id,
        "type": "observation",
        "content": content,
        "role": _string(row, "role"),
        "author": _string(row, "actor_id"),
        "status": status,
        "metadata": records.metadata(None, kept),
        "observed_at": when,
        "created_at": created,
        "updated_at": when,
        "recorded_at": when,
        "superseded_at": superseded_at,
    }


def _next_time(row: dict[str, Any]) -> datetime | None:
    try:
        return _time(row, "_next_time", "next event's time")
    except Rejected:
        return None  # the next row is judged (and rejected) on its own
