"""Mem0 platform memories (PEER_FORMATS.md §1): ``get_all`` / search results as dumped to a file.

Accepted envelopes: a bare JSON array (v1.0 ``get_all``, v2), ``{"results": [...]}`` (v1.1, v3,
OSS ``Memory.get_all``; graph ``relations`` beside the results are ``observation`` episodes too,
see ``connectors.mem0.relations``), the paginated
``{"count", "next", "previous", "results"}``, and JSON Lines of memory objects (what a script that
pages through the API usually writes). Field names of every API generation: ``memory`` / ``name``
/ ``content`` for the text, ``run_id`` / ``session_id`` for the session. Timestamps are ISO 8601
with ``Z``, ``+00:00`` or US/Pacific offsets; naive times are taken as UTC; numbers are rejected,
never guessed at.

Mapping: a memory becomes one ``observation`` episode, ``source_id`` = ``id``, idempotency key
``mem0:<id>``; ``replaced_by`` set means ``superseded``; ``actor_id`` → author.
``expiration_date`` → ``valid_to`` (a date is served through that day: ``valid_to`` is the next
midnight UTC; a date-time is taken as is; anything else is ``bad_timestamp``), so
``episodes_as_of`` leaves an expired memory out. The source's ``metadata`` object becomes the
canonical metadata, and every other field the record had (``app_id``, ``hash``,
``expiration_date``, unknown ones…) is kept under its ``_source`` key.

Times: ``created_at`` and ``updated_at`` as the source gives them; ``observed_at`` is when the text
the episode holds was written, ``updated_at`` (the last rewrite), else ``created_at`` — as the
history database's versions are observed at their event. The store's current-version choice
(``pipelines.store.episodes.CURRENT_ORDER``) trusts the same time: ``updated_at``, else
``created_at``. The same memory in two dumps (a ``get_all`` page with its user, run and actor;
the history database, which has none) is one episode; a version without user, agent or session
never wins over one that has them, unless it is a tombstone (a DELETE), so the memory keeps its
user's scope.

Other Mem0 dumps are told apart by content, never by name, and read on the record path: a SQLite
file is the OSS history database (``connectors.mem0.history``: every ADD/UPDATE/DELETE row a version of its
memory), a zip is an OpenMemory backup and a JSON object with ``memories`` and ``user`` its
``memories.json`` (``connectors.mem0.backup``), and any other JSON object that reads as a filled-in schema
is a ``get_memory_export`` result, imported whole as one ``document``. The JSON arrays, envelopes
and JSON Lines above keep the SQL path.
"""

from __future__ import annotations

from collections.abc import Iterator

from fsspec import AbstractFileSystem

from connectors.base import Batch, Connector, ReadOptions
from connectors.errors import DumpFormatError
from connectors.kit import normalize, records, sources
from connectors.kit.sources import RecordShape
from connectors.kit.sql import (
    PARSED_CTE,
    UNDECIDED,
    looks_non_string,
    looks_structured,
    metadata_sql,
    not_a_list,
    not_a_string,
    set_time,
)
from connectors.mem0 import backup, history, relations

NAME = "mem0"
VERSION = "1.0.0"

#: Fields mapped to canonical columns.
_PROMOTED = (
    "id",
    "memory",
    "name",
    "content",
    "user_id",
    "agent_id",
    "run_id",
    "session_id",
    "categories",
    "created_at",
    "updated_at",
    "actor_id",
    "role",
    "metadata",
)
#: Documented fields kept verbatim in ``metadata._source`` (PEER_FORMATS.md §1.2-§1.3).
_KEPT = (
    "app_id",
    "hash",
    "immutable",
    "expiration_date",
    "owner",
    "organization",
    "input",
    "structured_attributes",
    "replaced_by",
    "synthesized",
    "lifecycle_state",
    "score",
    "score_breakdown",
    "attributed_to",
    "text_lemmatized",
)
_SHAPE = RecordShape(
    struct={k: "JSON" for k in ("metadata", *_KEPT)}
    | {"categories": "VARCHAR[]"}
    | {k: "VARCHAR" for k in _PROMOTED if k not in ("categories", "metadata")},
    known=(*_PROMOTED, *_KEPT),
    scan_types={"created_at": "TIMESTAMPTZ", "updated_at": "TIMESTAMPTZ"},
)
_METADATA = metadata_sql(raw="raw", meta="r.metadata", alias="r", kept=_KEPT, known=_PROMOTED)
_TEXT_PATH = (
    "CASE WHEN r.memory IS NOT NULL THEN '$.memory' WHEN r.name IS NOT NULL THEN '$.name' "
    "ELSE '$.content' END"
)
_ID_NOT_STRING = not_a_string("r.id", "raw", "'$.id'", numbers_ok=True)
_UNDECIDED = f"raw IS NULL AND ({looks_structured('r.id')} OR {looks_non_string('text')})"
_TEXT_NOT_STRING = not_a_string("text", "raw", _TEXT_PATH)
_CATEGORIES_NOT_LIST = not_a_list("r.categories", "raw", "categories")

_SQL = f"""
WITH {PARSED_CTE},
typed AS (
  SELECT *,
    coalesce(r.memory, r.name, r.content) AS text,
    TRY_CAST(r.created_at AS TIMESTAMPTZ) AS created_ts,
    TRY_CAST(r.updated_at AS TIMESTAMPTZ) AS updated_ts,
    r.expiration_date ->> '$' AS expires,
    -- a date is the last day the memory is served: valid until the next midnight (UTC)
    CASE WHEN strlen(r.expiration_date ->> '$') = 10
      THEN (TRY_CAST(r.expiration_date ->> '$' AS DATE) + 1)::TIMESTAMP AT TIME ZONE 'UTC'
      ELSE TRY_CAST(r.expiration_date ->> '$' AS TIMESTAMPTZ) END AS expires_ts
  FROM parsed
),
checked AS (
  SELECT *,
    CASE
      WHEN reason IS NOT NULL THEN reason
      WHEN raw_type IS NULL THEN 'invalid_json'
      WHEN NOT ok THEN 'not_an_object'
      WHEN {_UNDECIDED} THEN '{UNDECIDED}'
      WHEN {_ID_NOT_STRING} THEN 'wrong_type'
      WHEN {_TEXT_NOT_STRING} THEN 'wrong_type'
      WHEN r.created_at IS NOT NULL AND created_ts IS NULL THEN 'bad_timestamp'
      WHEN r.updated_at IS NOT NULL AND updated_ts IS NULL THEN 'bad_timestamp'
      WHEN expires IS NOT NULL AND expires_ts IS NULL THEN 'bad_timestamp'
      WHEN {_CATEGORIES_NOT_LIST} THEN 'wrong_type'
    END AS why
  FROM typed
)
SELECT
  pos,
  why AS reason,
  CASE
    WHEN why IS NULL THEN NULL
    WHEN reason IS NOT NULL THEN detail
    WHEN why = 'invalid_json' THEN 'record is not valid JSON'
    WHEN why = 'not_an_object' THEN 'record is a JSON ' || lower(raw_type) || ', not an object'
    WHEN {_ID_NOT_STRING}
      THEN 'field id is a JSON ' || lower(json_type(raw, '$.id')) || ', expected a string'
    WHEN {_TEXT_NOT_STRING}
      THEN 'field ' || substr({_TEXT_PATH}, 3) || ' is a JSON '
        || lower(json_type(raw, {_TEXT_PATH})) || ', expected a string'
    WHEN r.created_at IS NOT NULL AND created_ts IS NULL
      THEN 'field created_at: ' || r.created_at || ' is not an ISO 8601 timestamp'
    WHEN r.updated_at IS NOT NULL AND updated_ts IS NULL
      THEN 'field updated_at: ' || r.updated_at || ' is not an ISO 8601 timestamp'
    WHEN expires IS NOT NULL AND expires_ts IS NULL
      THEN 'field expiration_date: ' || expires || ' is not an ISO 8601 date or timestamp'
    ELSE 'field categories is a JSON ' || lower(json_type(raw, '$.categories'))
      || ', expected a list'
  END AS detail,
  '{NAME}:' || r.id AS idempotency_key,
  r.id AS source_id,
  'observation' AS type,
  text AS content,
  r.role AS role,
  NULL::VARCHAR AS namespace,
  NULL::VARCHAR AS source,
  r.actor_id AS author,
  NULL::VARCHAR AS channel,
  r.user_id AS user_id,
  r.agent_id AS agent_id,
  coalesce(r.session_id, r.run_id) AS session_id,
  NULL::VARCHAR AS priority,
  CASE WHEN r.replaced_by IS NOT NULL THEN 'superseded' ELSE 'active' END AS status,
  r.categories AS categories,
  NULL::VARCHAR[] AS tags,
  CASE WHEN ok THEN {_METADATA} END AS metadata,
  coalesce({set_time("updated_ts")}, {set_time("created_ts")}) AS observed_at,
  created_ts AS created_at,
  updated_ts AS updated_at,
  NULL::TIMESTAMPTZ AS valid_from,
  expires_ts AS valid_to,
  NULL::TIMESTAMPTZ AS recorded_at,
  NULL::TIMESTAMPTZ AS superseded_at,
  r.user_id AS scope_user_id,
  r.agent_id AS scope_agent_id,
  r.app_id ->> '$' AS scope_app_id,
  coalesce(r.session_id, r.run_id) AS scope_session_id,
  coalesce(r.session_id, r.run_id) AS scope_run_id
FROM checked
"""


_EXPECTED = (
    'Mem0 memory dump (a JSON array, {"results": [...]}, a paginated page, JSON Lines, '
    "a get_memory_export result, an OpenMemory backup or an OSS history database)"
)


def read(fs: AbstractFileSystem, path: str, options: ReadOptions) -> Iterator[Batch]:
    """Yield the Mem0 memories in the dump at ``path`` as canonical batches."""
    kind = records.sniff(fs, path)
    if kind == "sqlite":
        yield from records.run(NAME, history.rows(fs, path), fs, path, options)
        return
    if kind == "zip":
        yield from records.run(NAME, backup.zip_rows(fs, path), fs, path, options)
        return
    head = sources.peek(fs, path) if kind == "json" else None
    if head is not None and head.shape == "object" and "results" not in head.first_keys:
        yield from records.run(NAME, _object_rows(fs, path, head.first_keys), fs, path, options)
        return
    # only a v1.1 envelope may hold graph relations, and only then is the identity the results
    # share worth working out (it parses every record's metadata: 15% of a bare array's ingest)
    graph = head is not None and head.shape == "object" and relations.mentioned(fs, path)
    shared = relations.Shared()
    read = 0
    for batch in normalize.run(
        NAME,
        _SQL,
        _SHAPE,
        fs,
        path,
        options,
        envelope_prefix={"results": "results.item"},
        expected=_EXPECTED,
    ):
        read += batch.read
        if graph:
            shared.add(batch.episodes)
        yield batch
    if graph:
        yield from records.run(NAME, relations.rows(fs, path, shared, start=read), fs, path, options)


def _object_rows(fs: AbstractFileSystem, path: str, keys: tuple[str, ...]) -> Iterator[records.Row]:
    """A JSON object that is not a ``results`` envelope: an OpenMemory ``memories.json`` snapshot
    (streamed), else a ``get_memory_export`` result (one document), else not a Mem0 dump."""
    if "memories" in keys and "user" in keys:
        yield from backup.snapshot_rows(lambda: fs.open(path, "rb"))
        return
    uri = fs.unstrip_protocol(path)
    try:
        doc = records.load_document(fs, path, expected=_EXPECTED, max_bytes=backup.MAX_EXPORT_BYTES)
    except records.Rejected as exc:  # broken before it could tell what it is
        yield records.rejected(0, None, exc)
        return
    found = backup.classify_object(doc)
    if found is not None:
        raise DumpFormatError(uri, _EXPECTED, found)
    yield backup.export_row(fs, path, fs.cat_file(path), doc)


CONNECTOR = Connector(
    name=NAME,
    version=VERSION,
    description=(
        "Mem0 platform / OSS memories: bare list, {results}, paginated pages, JSON Lines; the OSS "
        "history database (SQLite); OpenMemory backup zips; get_memory_export results as documents."
    ),
    scope_fields=("user_id", "agent_id", "app_id", "session_id", "run_id"),
    default_scope_template="user:{user_id}",
    formats=("json", "jsonl", "zip", "sqlite"),
    read_fn=read,
)
