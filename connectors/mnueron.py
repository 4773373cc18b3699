"""Mnueron memory exports (PEER_FORMATS.md §5.3): JSON, NDJSON and RFC 4180 CSV.

The format is told from the content: a JSON array of memory rows (or an object holding it under
``memories``, ``data`` or ``results``, as the ``/api/memories`` listing pages may be saved);
NDJSON, one row per line; CSV with the documented header
``id,content,namespace,tags,source,source_ref,created_at,updated_at`` in any column order
(``id``, ``content``, ``namespace`` or ``namespace_name``, ``tags`` and ``created_at`` required;
other columns kept; a ``metadata`` column, if an export has one, is read as JSON). CSV fields may
be quoted, hold commas, doubled quotes and line breaks.

Mapping: one ``observation`` episode per memory row; ``source_id`` = ``id``, idempotency key
``mnueron:<id>``; ``namespace`` (or its alias ``namespace_name``; when both are given, the alias
is kept under ``_source``) → namespace; ``tags`` a list (JSON: an array; CSV cell: a JSON array
or ``;``-joined); ``source`` → source; ``created_at``/``updated_at`` are **epoch milliseconds**
(numbers, or digit strings in CSV; ISO 8601 text is read as such), never another unit: a
number below 10^12 (before 2001-09-09, what epoch seconds look like) is ``bad_timestamp``;
``observed_at`` = ``created_at``, else ``updated_at``. The ``metadata`` object, with its edit
``history`` array, becomes the canonical metadata; every other field (``source_ref``, ``score``…)
is kept under its ``_source`` key; ``embedding`` vectors are dropped. Mnueron has no deletion or
supersession marker, so every row is ``active``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from fsspec import AbstractFileSystem

from connectors.base import Batch, Connector, ReadOptions
from connectors.kit import records, tabular
from connectors.kit.records import Rejected, Row, ident, metadata, parse_time, str_list, text
from connectors.kit.tabular import Item
from connectors.schema import RejectReason

NAME = "mnueron"
VERSION = "1.0.0"

_EXPECTED = "Mnueron export (a JSON array of memory rows, NDJSON or CSV)"
_ENVELOPE_KEYS = ("memories", "data", "results")
_CSV_COLUMNS = (("id",), ("content",), ("namespace", "namespace_name"), ("tags",), ("created_at",))
_PROMOTED = frozenset(
    {"id", "content", "namespace", "tags", "source", "metadata", "created_at", "updated_at"}
)
_DROPPED = frozenset({"embedding"})
#: 10^12 ms after the epoch: epoch-ms values of any real export are above it.
_MS_FLOOR = datetime(2001, 9, 9, 1, 46, 40, tzinfo=UTC)


def read(fs: AbstractFileSystem, path: str, options: ReadOptions) -> Iterator[Batch]:
    found = tabular.items(
        fs, path, expected=_EXPECTED, envelope_keys=_ENVELOPE_KEYS, csv_columns=_CSV_COLUMNS
    )
    yield from records.run(NAME, tabular.staged(found, _stage), fs, path, options)


def _stage(item: Item) -> Row:
    rec = item.fields
    source_id = ident(rec, "id")
    namespace = text(rec, "namespace")
    alias = text(rec, "namespace_name")
    promoted = _PROMOTED if namespace is not None else _PROMOTED | {"namespace_name"}
    if item.kind == "csv":
        tags = tabular.text_list(rec.get("tags"), "tags", sep=";")
        source_meta = tabular.json_text(rec.get("metadata"), "metadata")
    else:
        tags = str_list(rec.get("tags"), "tags")
        source_meta = rec.get("metadata")
    created_at = _epoch_ms(rec.get("created_at"), "created_at")
    updated_at = _epoch_ms(rec.get("updated_at"), "updated_at")
    source = text(rec, "source")
    namespace = namespace if namespace is not None else alias
    rest = {k: v for k, v in rec.items() if k not in promoted and k not in _DROPPED}
    return {
        "pos": item.pos,
        "raw": item.raw,
        "idempotency_key": None if source_id is None else f"{NAME}:{source_id}",
        "source_id": source_id,
        "type": "observation",
        "content": text(rec, "content"),
        "namespace": namespace,
        "source": source,
        "status": "active",
        "tags": tags,
        "metadata": metadata(source_meta, rest),
        "observed_at": created_at or updated_at,
        "created_at": created_at,
        "updated_at": updated_at,
        "scope_namespace": namespace,
        "scope_source": source,
    }


def _epoch_ms(value: Any, field: str) -> datetime | None:
    """An epoch-ms timestamp. A number below 10^12 ms (before 2001-09-09) is refused, not
    reinterpreted: it is what epoch *seconds* look like, and the unit is never guessed."""
    parsed = parse_time(value, field, unit="ms")
    if parsed is not None and parsed < _MS_FLOOR and not _is_iso(value):
        raise Rejected(
            RejectReason.BAD_TIMESTAMP,
            f"field {field}: {value!r} as epoch ms is {parsed.isoformat()}, before 2001-09-09; "
            "Mnueron timestamps are epoch milliseconds (the unit is never guessed)",
        )
    return parsed


def _is_iso(value: Any) -> bool:
    return isinstance(value, str) and not value.strip().lstrip("-").replace(".", "", 1).isdigit()


CONNECTOR = Connector(
    name=NAME,
    version=VERSION,
    description="Mnueron exports: JSON array, NDJSON, RFC 4180 CSV; epoch-ms timestamps.",
    scope_fields=("namespace", "source"),
    default_scope_template="namespace:{namespace}",
    formats=("json", "jsonl", "csv"),
    read_fn=read,
)
