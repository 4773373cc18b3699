"""The canonical episode schema: defined once, used by every connector, writer and test.

One row is one version of one episode. See DESIGN.md, "The canonical episode".
"""

from __future__ import annotations

from enum import StrEnum

import polars as pl

EPISODE_TYPES = ("message", "document", "code", "event", "decision", "task", "observation")
SOURCE_SYSTEMS = ("mem0", "zep", "letta", "openai", "cortexdb", "memsolus", "mnueron")
STATUSES = ("active", "superseded", "deleted")
PRIORITIES = ("LOW", "MEDIUM", "HIGH")
ROLES = ("user", "assistant", "system", "tool")

#: Content larger than this many bytes of UTF-8 is rejected with ``payload_too_large``.
MAX_CONTENT_BYTES = 100 * 1024
#: A record nesting deeper than this is rejected with ``too_deep``: no real dump comes near it,
#: and Python's own JSON and recursion limits sit not far above.
MAX_DEPTH = 64
#: A record (a JSON Lines line, an array item) longer than this many bytes is rejected with
#: ``payload_too_large`` before it is parsed: no reader holds more of one record. 40 times the
#: content limit; measured: DuckDB's JSON projection of several 5 MB records outgrows its 256 MB
#: working memory, of any number of 4 MB records does not.
MAX_RECORD_BYTES = 4 << 20

_TS = pl.Datetime("us", "UTC")

_EPISODE_COLUMNS: dict[str, pl.DataType] = {
    "episode_id": pl.String(),
    "idempotency_key": pl.String(),
    "tenant_id": pl.String(),
    "scope": pl.String(),
    "namespace": pl.String(),
    "type": pl.Enum(EPISODE_TYPES),
    "content": pl.String(),
    "role": pl.String(),
    "source_system": pl.Enum(SOURCE_SYSTEMS),
    "source_id": pl.String(),
    "source": pl.String(),
    "author": pl.String(),
    "channel": pl.String(),
    "user_id": pl.String(),
    "agent_id": pl.String(),
    "session_id": pl.String(),
    "priority": pl.Enum(PRIORITIES),
    "status": pl.Enum(STATUSES),
    "categories": pl.List(pl.String),
    "tags": pl.List(pl.String),
    "metadata": pl.String(),
    "observed_at": _TS,
    "created_at": _TS,
    "updated_at": _TS,
    "valid_from": _TS,
    "valid_to": _TS,
    "recorded_at": _TS,
    "superseded_at": _TS,
    "content_sha256": pl.String(),
    "dump_uri": pl.String(),
    "dump_record": pl.Int64(),
    "ingested_at": _TS,
}
EPISODE_SCHEMA = pl.Schema(_EPISODE_COLUMNS)

#: Columns that may never be null in an accepted episode.
REQUIRED_COLUMNS = (
    "episode_id",
    "idempotency_key",
    "tenant_id",
    "scope",
    "type",
    "content",
    "source_system",
    "source_id",
    "status",
    "categories",
    "tags",
    "metadata",
    "observed_at",
    "content_sha256",
    "dump_uri",
    "dump_record",
    "ingested_at",
)


class RejectReason(StrEnum):
    """Why a record did not become an episode. Stable codes: analysts group by them."""

    INVALID_JSON = "invalid_json"
    INVALID_UTF8 = "invalid_utf8"
    NOT_AN_OBJECT = "not_an_object"
    MALFORMED_DOCUMENT = "malformed_document"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNRESOLVED_SCOPE = "unresolved_scope"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNKNOWN_TYPE = "unknown_type"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_VALUE = "bad_value"
    TENANT_MISMATCH = "tenant_mismatch"
    TOO_DEEP = "too_deep"
    UNSAFE_ARCHIVE_ENTRY = "unsafe_archive_entry"
    #: Records read and deliberately not imported (ChatGPT hidden system/tool nodes, nodes
    #: without a message): counted like every reject, but not held against the reject rate.
    HIDDEN_NODE = "hidden_node"
    EMPTY_NODE = "empty_node"
    #: Directory records that hold no memory content (Zep users, threads, groups, entity nodes):
    #: read and deliberately not imported; the record is kept in the reject.
    NOT_MEMORY = "not_memory"
    DUPLICATE = "duplicate"
    #: The document ends mid-way (a cut file): the bytes from the record it ends in are unread.
    TRUNCATED_DOCUMENT = "truncated_document"
    #: Data follows the end of the JSON document (two documents back to back): it is unread.
    TRAILING_DATA = "trailing_data"


#: Reasons that mean "skipped on purpose", not "could not be used".
SKIP_REASONS = frozenset(
    {RejectReason.HIDDEN_NODE.value, RejectReason.EMPTY_NODE.value, RejectReason.NOT_MEMORY.value}
)


_REJECT_COLUMNS: dict[str, pl.DataType] = {
    "tenant_id": pl.String(),
    "source_system": pl.Enum(SOURCE_SYSTEMS),
    "dump_uri": pl.String(),
    "dump_record": pl.Int64(),
    "reason": pl.Enum([r.value for r in RejectReason]),
    "detail": pl.String(),
    "raw": pl.String(),
    "ingested_at": _TS,
}
REJECT_SCHEMA = pl.Schema(_REJECT_COLUMNS)
