"""OpenMemory backups and the Platform's ``get_memory_export`` result (PEER_FORMATS.md §1.1, §1.4).

**OpenMemory backup** (``POST /api/v1/backup/export``): a zip holding ``memories.json`` (a
relational snapshot: ``user``, ``apps``, ``categories``, ``memories``, ``memory_categories``,
``status_history``, ``access_controls``, ``export_meta``) and ``memories.jsonl.gz`` (the same
memories, one JSON line each, with the app and category *names*). Both hold the same memories, so
one is read: ``memories.json`` when the zip has it (it alone has ``archived_at``, ``deleted_at``
and the user), else ``memories.jsonl.gz``. ``memories.json`` on its own (outside a zip) is read
the same way. From the snapshot, ``user`` gives the external user id (``memories[].user_id`` is
the internal UUID, kept in metadata), ``apps`` and ``categories`` turn ids into names; the other
sections (``memory_categories``, ``status_history``, ``access_controls``, ``export_meta``) repeat
what each memory carries or describe the export, and are not read. Entries are read in place
through ``archive``; an unsafe entry that would have been read is an ``unsafe_archive_entry``
reject. Reading is bounded (``kit.bounded``): the gzip inside the zip may not inflate past the
limits (else the rest of it is one ``unsafe_archive_entry`` reject), a line longer than
``bounded.MAX_LINE_BYTES`` is one ``payload_too_large`` reject and the next line is read, and an
entry whose data is broken or lies about its size ends with one ``malformed_document`` reject.

Mapping: a memory is one ``observation``, idempotency key ``mem0:<id>`` (OpenMemory keeps Mem0's
memory ids), ``source`` and ``{app_id}`` = the app's name, ``observed_at`` = ``created_at``.
``state`` ``active`` is ``active``; ``paused`` (no app is served the memory until it is resumed)
is ``superseded``, with ``superseded_at`` = ``updated_at`` (the pause rewrites it): out of the
active set and of default exports, its text kept (a tombstone would say it is gone, a reject would
lose it); ``deleted`` and ``archived`` (hidden from every listing, kept only for restore) are
``deleted`` tombstones, never live facts, with ``superseded_at`` = ``deleted_at`` /
``archived_at``. The state itself stays in ``metadata._source.state``. ``observed_at`` is when the
text was last written (``updated_at``, else ``created_at``), as for ``get_all``.

**Memory export** (``get_memory_export``): one JSON object an LLM filled in to a schema the user
chose, so it is never read as memory rows: the whole object is one ``document`` episode whose
content is its exact JSON text, ``source_id`` its ``memory_export_id`` / ``export_id`` when it has
one, else ``sha256:<hash of the text>``, and ``observed_at`` the dump file's modification time
(the export has no time of its own). An object counts as an export only if some top-level value
is a plain value (text, number, boolean): an object made only of lists and objects is a
collection dump of something else, and so are the export *request receipt* ``{message, id}`` and
an API error ``{error}``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from fsspec import AbstractFileSystem

from connectors.errors import DumpFormatError
from connectors.kit import archive, bounded, records
from connectors.kit.records import Rejected, Row
from connectors.schema import RejectReason

EXPECTED_ZIP = "Mem0 OpenMemory backup (a zip holding memories.json or memories.jsonl.gz)"
_ENTRIES = ("memories.json", "memories.jsonl.gz")
#: ``paused`` is not served to any app until resumed: ``superseded`` keeps it out of the active set
#: (and out of exports unless superseded rows are asked for) while keeping its text, unlike a
#: tombstone or a reject; ``metadata._source.state`` says it was paused.
_STATES = {"active": "active", "paused": "superseded", "archived": "deleted", "deleted": "deleted"}
#: Fields mapped to canonical columns (the rest goes under ``metadata._source``).
_MAPPED = ("id", "content", "memory", "metadata", "created_at", "updated_at", "categories", "app")
#: Errors of a zip entry or gzip stream that breaks off (bad CRC, truncated deflate data), or
#: passes a bound; a bare ``memories.json`` file read through fsspec raises only ``OSError``.
_BROKEN = (*bounded.BROKEN, bounded.Unreadable)
#: An export is an LLM's answer to a schema: larger than this is not one.
MAX_EXPORT_BYTES = 16 << 20

Opener = Callable[[], contextlib.AbstractContextManager[IO[bytes]]]
#: An entry opener: the bounded stream of one zip entry.
EntryOpener = Callable[[], IO[bytes]]


@dataclass
class Context:
    """What the snapshot says around its memories: the user, app and category names."""

    user: dict[str, Any] = field(default_factory=dict)
    apps: dict[str, str] = field(default_factory=dict)
    categories: dict[str, str] = field(default_factory=dict)


# --- OpenMemory ----------------------------------------------------------------------------------


def zip_rows(fs: AbstractFileSystem, path: str) -> Iterator[Row]:
    """The memories of an OpenMemory backup zip, as staged rows."""
    with archive.open_zip(fs, path, expected=EXPECTED_ZIP) as zipped:
        entries = archive.entries(zipped)
        candidates = [e for name in _ENTRIES for e in entries if e.basename == name]
        if not candidates:
            names = ", ".join(e.name for e in entries[:8]) or "no files"
            raise DumpFormatError(fs.unstrip_protocol(path), EXPECTED_ZIP, f"a zip archive with: {names}")
        pos = 0
        for entry in candidates:
            if entry.problem is not None:
                yield records.reject(pos, None, RejectReason.UNSAFE_ARCHIVE_ENTRY, entry.problem)
                pos += 1
                continue

            def opener(entry: archive.Entry = entry) -> IO[bytes]:
                return archive.open_entry(zipped, entry)

            try:
                if entry.basename == "memories.json":
                    yield from snapshot_rows(opener, start=pos)
                else:
                    yield from lines_rows(opener, start=pos)
            except bounded.Unreadable as exc:  # at open: no record of the entry was read
                yield records.reject(pos, None, exc.reason, f"{exc.detail}; entry not read")
            return


def snapshot_rows(opener: Opener, *, start: int = 0) -> Iterator[Row]:
    """The memories of a ``memories.json`` snapshot (or a bare array of memories), streamed."""
    with opener() as f:
        head = f.read(64).removeprefix(records.BOM).lstrip()
    is_array = head[:1] == b"["
    context = Context() if is_array else _context(opener)
    pos = start
    with opener() as f:
        try:
            for i, item in records.json_items(f, "item" if is_array else "memories.item"):
                pos = start + i
                if isinstance(item, Rejected):
                    yield records.rejected(pos, None, item)
                else:
                    yield _memory_row(pos, item, context)
                pos += 1
        except records.Malformed as exc:
            yield records.broken(start + exc.pos, exc, f"memories.json breaks off {exc}")
        except bounded.Unreadable as exc:
            yield records.reject(pos, None, exc.reason, f"memories.json after memory {pos}: {exc.detail}")
        except _BROKEN as exc:
            yield records.reject(
                pos,
                None,
                RejectReason.MALFORMED_DOCUMENT,
                f"memories.json breaks off after memory {pos}: {exc}",
            )


def _first(opener: Opener, prefix: str) -> Any:
    """The first value under ``prefix``, reading no further than it (None if absent or broken)."""
    with opener() as f:
        try:
            return records.first_value(f, prefix)
        except _BROKEN:
            return None


def _context(opener: Opener) -> Context:
    user, apps, categories = (_first(opener, key) for key in ("user", "apps", "categories"))
    return Context(
        user=user if isinstance(user, dict) else {},
        apps=_names(apps),
        categories=_names(categories),
    )


def _names(items: Any) -> dict[str, str]:
    if not isinstance(items, list):
        return {}
    return {
        str(i["id"]): i["name"]
        for i in items
        if isinstance(i, dict) and "id" in i and isinstance(i.get("name"), str)
    }


def lines_rows(opener: EntryOpener, *, start: int = 0) -> Iterator[Row]:
    """The memories of ``memories.jsonl.gz``: gzip JSON Lines, decompressed as a bounded stream."""
    pos = start
    number = 0
    with opener() as raw, bounded.gunzip(raw, "memories.jsonl.gz (gzip)") as stream:
        try:
            for line in bounded.lines(stream):
                number = line.number + 1
                if line.oversized:
                    yield records.reject(
                        pos,
                        line.data.decode("utf-8", "replace") + "…",
                        RejectReason.PAYLOAD_TOO_LARGE,
                        f"memories.jsonl.gz line {number} is {line.size:,} bytes; one record may hold "
                        f"{bounded.MAX_LINE_BYTES:,}; line skipped",
                    )
                elif line.data.strip():
                    yield _line_row(pos, line.data.removeprefix(records.BOM) if pos == start else line.data)
                else:
                    continue
                pos += 1
        except bounded.Unreadable as exc:
            yield records.reject(
                pos, None, exc.reason, f"memories.jsonl.gz after line {number}: {exc.detail}; rest not read"
            )


def _line_row(pos: int, line: bytes) -> Row:
    try:
        textual = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raw = line.decode("utf-8", "replace")
        return records.reject(
            pos, raw, RejectReason.INVALID_UTF8, f"line is not valid UTF-8 at byte {exc.start}"
        )
    try:
        record = json.loads(textual)
    except RecursionError:
        return records.reject(
            pos, textual, RejectReason.TOO_DEEP, f"line nests deeper than {records.MAX_DEPTH} levels"
        )
    except ValueError:
        return records.reject(pos, textual, RejectReason.INVALID_JSON, "line is not valid JSON")
    return _memory_row(pos, record, Context(), raw=textual.rstrip("\r\n"))


def _memory_row(pos: int, record: Any, context: Context, *, raw: str | None = None) -> Row:
    raw = raw if raw is not None else records.dumps(record)
    if not isinstance(record, dict):
        kind = records.json_type(record)
        return records.reject(pos, raw, RejectReason.NOT_AN_OBJECT, f"memory is a JSON {kind}, not an object")
    try:
        return _stage_memory(pos, raw, record, context)
    except Rejected as exc:
        return records.rejected(pos, raw, exc)


def _stage_memory(pos: int, raw: str, record: dict[str, Any], context: Context) -> Row:
    records.check_depth(record, "memory")
    memory_id = records.ident(record, "id")
    content = records.text(record, "content" if "content" in record else "memory")
    state = records.text(record, "state") or "active"
    if state not in _STATES:
        raise Rejected(
            RejectReason.BAD_VALUE, f"state {state!r} is not one of active|paused|archived|deleted"
        )
    created = records.parse_time(record.get("created_at"), "created_at")
    updated = records.parse_time(record.get("updated_at"), "updated_at")
    archived = records.parse_time(record.get("archived_at"), "archived_at")
    deleted = records.parse_time(record.get("deleted_at"), "deleted_at")
    app_id = records.ident(record, "app_id")
    app = records.text(record, "app") or context.apps.get(app_id or "", app_id)
    categories = records.str_list(record.get("categories"), "categories")
    if categories is None and record.get("category_ids") is not None:
        ids = records.str_list(record.get("category_ids"), "category_ids") or []
        categories = [context.categories.get(c, c) for c in ids]
    internal_user = records.ident(record, "user_id")
    user = context.user
    known_user = user.get("user_id") if isinstance(user.get("user_id"), str) else None
    user_id = known_user if known_user and internal_user in (None, str(user.get("id"))) else internal_user
    status = _STATES[state]
    rest = {k: v for k, v in record.items() if k not in _MAPPED}
    return {
        "pos": pos,
        "raw": raw,
        "idempotency_key": None if memory_id is None else f"mem0:{memory_id}",
        "source_id": memory_id,
        "type": "observation",
        "content": content,
        "source": app,
        "user_id": user_id,
        "status": status,
        "categories": categories,
        "metadata": records.metadata(record.get("metadata"), rest),
        "observed_at": updated or created,
        "created_at": created,
        "updated_at": updated,
        "superseded_at": (deleted or archived)
        if status == "deleted"
        else updated
        if state == "paused"
        else None,
        "scope_user_id": user_id,
        "scope_app_id": app,
    }


# --- get_memory_export ---------------------------------------------------------------------------


def classify_object(doc: Any) -> str | None:
    """None if ``doc`` reads as a memory-export result, else what it is instead (for the error)."""
    if not isinstance(doc, dict):
        return f"a JSON {records.json_type(doc)} document"
    keys = ", ".join(list(doc)[:8]) or "no keys"
    if set(doc) == {"message", "id"}:
        return (
            f"a memory-export request receipt (message, id = {doc['id']!r}); fetch the export "
            "itself with get_memory_export(memory_export_id=...)"
        )
    if set(doc) == {"error"}:
        return f"an API error response: {doc['error']!r}"
    if "id" in doc and ("memory" in doc or "name" in doc):
        return f"a single memory object (keys: {keys}); write a JSON array or JSON Lines"
    if not any(isinstance(v, str | int | float) for v in doc.values()):  # bool is an int
        return f"a JSON object with keys: {keys}"
    return None


def export_row(fs: AbstractFileSystem, path: str, data: bytes, doc: dict[str, Any]) -> Row:
    """The whole export object as one ``document`` staged row."""
    textual = data.removeprefix(records.BOM).decode("utf-8")
    export_id = next(
        (doc[k] for k in ("memory_export_id", "export_id") if isinstance(doc.get(k), str) and doc[k]), None
    )
    source_id = export_id or "sha256:" + hashlib.sha256(textual.encode("utf-8")).hexdigest()
    return {
        "pos": 0,
        "raw": textual,
        "idempotency_key": f"mem0-export:{source_id}",
        "source_id": source_id,
        "type": "document",
        "content": textual,
        "status": "active",
        "metadata": records.metadata(None, {"kind": "get_memory_export"}),
        "observed_at": modified_time(fs, path),
    }


def modified_time(fs: AbstractFileSystem, path: str) -> datetime | None:
    """When the dump file was last written, as the filesystem says (None if it does not)."""
    try:
        when = fs.modified(path)
    except (NotImplementedError, OSError, KeyError, AttributeError):
        return None
    if not isinstance(when, datetime):
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
