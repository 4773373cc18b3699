"""CortexDB JSONL (PEER_FORMATS.md §5.1): export episode lines and import envelope lines.

One file may mix both. An *export line* is an episode as CortexDB's export endpoint writes it
(``episode_id``, ``event_id``, ``scope``, ``type``, ``content``, ``source``, ``author``,
``channel``, ``timestamp``, ``metadata``); an *import line* is the experience envelope
(``modality``, ``content: {kind, role, text | data | blob_id, transcript}``,
``context: {observed_at, labels}``, ``idempotency_key``, ``observed_actor``, ``source``, ``scope``).

Mapping: export lines keep their type; ``source_id`` = ``episode_id``; idempotency key
``cortexdb:<episode_id>``; ``observed_at`` = ``observed_at`` or ``timestamp``. Import lines map
``content.kind`` ``message`` → ``message`` (role kept), ``json`` → ``document`` (content is the JSON
text of ``data``), ``blob_ref`` → ``document`` (content is the transcript), ``triple`` →
``observation``; their ``idempotency_key`` is kept as given and is also the ``source_id``.
A line whose own ``tenant_id`` differs from the import's tenant is rejected, never re-homed.

A line is an import envelope when it has ``modality``, or a ``content`` object and no
``episode_id``. Text that is not a JSON string is ``wrong_type`` in both kinds of line, naming the
field (``content`` of an export line, ``content.text`` / ``content.transcript`` of an envelope),
never imported as the JSON text of what was there (``content.data`` of ``kind: json`` is JSON by
definition). Go's zero time (``0001-01-01T00:00:00Z``) is no time (``missing_field``).
"""

from __future__ import annotations

from collections.abc import Iterator

from fsspec import AbstractFileSystem

from connectors.base import Batch, Connector, ReadOptions
from connectors.kit import normalize
from connectors.kit.sources import RecordShape
from connectors.kit.sql import PARSED_CTE, json_type_name, metadata_sql, quote_literal

NAME = "cortexdb"
VERSION = "1.0.0"

_PROMOTED = (
    "episode_id",
    "scope",
    "type",
    "content",
    "source",
    "author",
    "channel",
    "timestamp",
    "observed_at",
    "metadata",
    "tenant_id",
    "namespace",
    "observed_actor",
)
_KEPT = ("event_id", "idempotency_key", "modality", "context")
_SHAPE = RecordShape(
    struct={
        k: "VARCHAR"
        for k in (
            "episode_id",
            "scope",
            "type",
            "source",
            "author",
            "channel",
            "timestamp",
            "observed_at",
            "tenant_id",
            "namespace",
            "observed_actor",
        )
    }
    | {
        "content": "JSON",
        "metadata": "JSON",
        "context": "JSON",
        "event_id": "JSON",
        "idempotency_key": "JSON",
        "modality": "JSON",
    },
    known=(*_PROMOTED, *_KEPT),
)
#: An import line's content object, less the text that became ``content`` (keeps blob_id etc.).
_CONTENT_REF = (
    "CASE WHEN json_type(r.content) = 'OBJECT' THEN json_merge_patch(r.content, "
    '\'{"text":null,"data":null,"transcript":null}\') END'
)
_METADATA = metadata_sql(
    raw="raw",
    meta="r.metadata",
    alias="r",
    kept=_KEPT,
    known=_PROMOTED,
    derived={"content": _CONTENT_REF},
)

_SQL = f"""
WITH {PARSED_CTE},
shaped AS (
  SELECT *,
    r.modality IS NOT NULL OR (json_type(r.content) = 'OBJECT' AND r.episode_id IS NULL) AS envelope,
    r.content ->> '$.kind' AS kind,
    r.context ->> '$.observed_at' AS ctx_observed_at,
    CASE r.content ->> '$.kind' WHEN 'message' THEN 'text' WHEN 'blob_ref' THEN 'transcript' END AS text_key
  FROM parsed
),
typed AS (
  SELECT *,
    CASE WHEN envelope THEN ctx_observed_at ELSE coalesce(r.observed_at, r.timestamp) END
      AS observed_text,
    CASE WHEN envelope THEN r.idempotency_key ->> '$' ELSE r.episode_id END AS sid,
    CASE
      WHEN NOT envelope THEN r.content ->> '$'
      WHEN kind = 'message' THEN r.content ->> '$.text'
      WHEN kind = 'json' THEN json_extract(r.content, '$.data')::VARCHAR
      WHEN kind = 'blob_ref' THEN r.content ->> '$.transcript'
      WHEN kind = 'triple' THEN json_merge_patch(r.content, '{{"kind":null}}')::VARCHAR
    END AS text
  FROM shaped
),
timed AS (
  SELECT *, TRY_CAST(observed_text AS TIMESTAMPTZ) AS observed_ts FROM typed
),
checked AS (
  SELECT *,
    CASE
      WHEN reason IS NOT NULL THEN reason
      WHEN raw_type IS NULL THEN 'invalid_json'
      WHEN NOT ok THEN 'not_an_object'
      WHEN NOT envelope AND json_type(r.content) NOT IN ('VARCHAR') THEN 'wrong_type'
      WHEN envelope AND json_type(r.content, '$.' || text_key) NOT IN ('VARCHAR', 'NULL') THEN 'wrong_type'
      WHEN envelope AND kind IS NULL THEN 'missing_field'
      WHEN observed_text IS NOT NULL AND observed_ts IS NULL THEN 'bad_timestamp'
      WHEN r.tenant_id IS NOT NULL AND r.tenant_id <> $tenant THEN 'tenant_mismatch'
    END AS why
  FROM timed
)
SELECT
  pos,
  why AS reason,
  CASE
    WHEN why IS NULL THEN NULL
    WHEN reason IS NOT NULL THEN detail
    WHEN why = 'invalid_json' THEN 'line is not valid JSON'
    WHEN why = 'not_an_object' THEN 'line is a JSON ' || lower(raw_type) || ', not an object'
    WHEN why = 'wrong_type' AND envelope
      THEN 'field content.' || text_key || ' is a JSON '
        || {json_type_name("json_type(r.content, '$.' || text_key)")} || ', expected a string'
    WHEN why = 'wrong_type'
      THEN 'field content is a JSON ' || {json_type_name("json_type(r.content)")} || ', expected a string'
    WHEN why = 'missing_field' THEN 'import line has no content.kind'
    WHEN why = 'bad_timestamp'
      THEN 'observed time ' || observed_text || ' is not an ISO 8601 timestamp'
    ELSE 'line belongs to tenant ' || r.tenant_id || ', not ' || $tenant
  END AS detail,
  CASE WHEN envelope THEN sid ELSE '{NAME}:' || sid END AS idempotency_key,
  sid AS source_id,
  CASE
    WHEN NOT envelope THEN r.type
    WHEN kind = 'message' THEN 'message'
    WHEN kind IN ('json', 'blob_ref') THEN 'document'
    WHEN kind = 'triple' THEN 'observation'
    ELSE 'content.kind=' || kind
  END AS type,
  text AS content,
  CASE WHEN envelope THEN r.content ->> '$.role' END AS role,
  r.namespace AS namespace,
  r.source AS source,
  coalesce(r.author, r.observed_actor) AS author,
  r.channel AS channel,
  NULL::VARCHAR AS user_id,
  NULL::VARCHAR AS agent_id,
  NULL::VARCHAR AS session_id,
  NULL::VARCHAR AS priority,
  'active' AS status,
  NULL::VARCHAR[] AS categories,
  TRY_CAST(json_extract(r.context, '$.labels') AS VARCHAR[]) AS tags,
  CASE WHEN ok THEN {_METADATA} END AS metadata,
  observed_ts AS observed_at,
  NULL::TIMESTAMPTZ AS created_at,
  NULL::TIMESTAMPTZ AS updated_at,
  NULL::TIMESTAMPTZ AS valid_from,
  NULL::TIMESTAMPTZ AS valid_to,
  NULL::TIMESTAMPTZ AS recorded_at,
  NULL::TIMESTAMPTZ AS superseded_at,
  r.scope AS scope_scope,
  r.namespace AS scope_namespace,
  r.author AS scope_author,
  r.channel AS scope_channel
FROM checked
"""


def read(fs: AbstractFileSystem, path: str, options: ReadOptions) -> Iterator[Batch]:
    """Yield the CortexDB episodes in the JSONL dump at ``path`` as canonical batches."""
    sql = _SQL.replace("$tenant", quote_literal(options.tenant_id))
    yield from normalize.run(
        NAME, sql, _SHAPE, fs, path, options, expected="CortexDB JSONL (one episode or envelope per line)"
    )


CONNECTOR = Connector(
    name=NAME,
    version=VERSION,
    description="CortexDB JSONL: export episode lines and import envelope lines, mixed freely.",
    scope_fields=("scope", "namespace", "author", "channel"),
    default_scope_template="{scope}",
    formats=("jsonl",),
    read_fn=read,
)
