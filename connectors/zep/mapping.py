"""Zep and Graphiti records → staged rows: the mapping described in ``connectors/zep/__init__.py``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from connectors.kit import records
from connectors.kit.records import Rejected, Row
from connectors.schema import RejectReason

Kind = Literal["edge", "fact", "episode", "message", "user", "thread", "graph", "node"]
_EDGE_KEYS = frozenset(
    {"source_node_uuid", "target_node_uuid", "name", "valid_at", "invalid_at", "expired_at", "episodes"}
    | {"episode_uuids", "group_id", "graph_uuid", "fact_embedding", "attributes"}
)
_EPISODE_KEYS = frozenset(
    {"source", "source_description", "document_id", "task_id", "role_name", "content_policy"}
    | {"graph_uuid", "group_id", "entity_edges", "episode_metadata", "labels", "valid_at"}
)
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "tool": "tool", "function": "tool"}
_ROLE_VALUES = "norole|system|assistant|user|function|tool"


def classify(record: Mapping[str, Any]) -> Kind | None:
    """A record's kind from its keys (for lists whose envelope does not say)."""
    if "fact" in record:
        return "edge" if _EDGE_KEYS & record.keys() else "fact"
    if "content" in record:
        if _EPISODE_KEYS & record.keys():
            return "episode"
        return "message" if {"role", "role_type", "name"} & record.keys() else "episode"
    if "uuid" not in record:
        return None
    if {"summary", "name_embedding", "labels"} & record.keys():
        return "node"
    if {"session_id", "thread_id", "thread_uuid"} & record.keys():
        return "thread"
    if {"user_id", "email", "first_name", "last_name", "session_count"} & record.keys():
        return "user"
    if {"group_id", "graph_id", "graph_uuid"} & record.keys():
        return "graph"
    return None


def row(pos: int, raw: str | None, value: Any, hint: Kind | None, ctx: Mapping[str, str]) -> Row:
    if isinstance(value, Rejected):
        return records.rejected(pos, raw, value)
    try:
        value = records.record_object(value, "record")
        kind = hint or classify(value)
        if kind is None:
            keys = ", ".join(list(value)[:8]) or "no keys"
            raise Rejected(
                RejectReason.UNKNOWN_TYPE,
                f"record is no Zep edge, episode, message, user or thread (keys: {keys})",
            )
        if kind in ("user", "thread", "graph", "node"):
            uuid = value.get("uuid")
            raise Rejected(
                RejectReason.NOT_MEMORY,
                f"Zep {kind} {uuid if isinstance(uuid, str) else '(no uuid)'} is a directory record, "
                "not memory content: not imported",
            )
        return _MAPPERS[kind](pos, raw, {k: v for k, v in value.items() if not _is_embedding(k)}, ctx)
    except Rejected as exc:
        return records.rejected(pos, raw, exc)


def _content(rec: Mapping[str, Any], key: str) -> str:
    value = records.text(rec, key, required=True)
    assert value is not None
    if not value.strip():
        raise Rejected(RejectReason.MISSING_FIELD, f"field {key} is empty")
    return value


def _is_embedding(key: str) -> bool:
    return key == "embedding" or key.endswith("_embedding")


def _common(pos: int, raw: str | None, rec: dict[str, Any], ctx: Mapping[str, str], prefix: str) -> Row:
    """The fields every kind shares: ids, scope values, ``created_at``."""
    uuid = records.ident(rec, "uuid")
    user_id = _first(rec, ctx, "user_id")
    user_uuid = _first(rec, ctx, "user_uuid")
    graph_id = _first(rec, ctx, "graph_id", "group_id", "graph_uuid")
    user = user_id or user_uuid
    created = records.parse_time(rec.get("created_at"), "created_at")
    return {
        "pos": pos,
        "raw": raw,
        "source_id": uuid,
        "idempotency_key": f"{prefix}:{uuid}" if uuid is not None else None,
        "user_id": user,
        "session_id": _first(rec, ctx, "session_id", "thread_id", "thread_uuid"),
        "status": "active",
        "created_at": created,
        "recorded_at": created,
        "scope_user_id": user,
        "scope_user_uuid": user_uuid,
        "scope_session_id": _first(rec, ctx, "session_id", "thread_id", "thread_uuid"),
        "scope_graph_id": graph_id,
        "scope_group_id": graph_id,
        "scope_owner": f"user:{user}" if user else f"graph:{graph_id}" if graph_id else None,
    }


def _first(rec: Mapping[str, Any], ctx: Mapping[str, str], *keys: str) -> str | None:
    for key in keys:
        value = records.ident(rec, key)
        if value:
            return value
    return next((ctx[key] for key in keys if ctx.get(key)), None)


_PROMOTED = frozenset({"uuid", "created_at", "user_id", "session_id", "thread_id", "thread_uuid"})


def _meta(rec: Mapping[str, Any], promoted: frozenset[str], meta_key: str = "metadata") -> str:
    rest = {k: v for k, v in rec.items() if k not in promoted and k != meta_key}
    return records.metadata(rec.get(meta_key), rest)


def _edge(pos: int, raw: str | None, rec: dict[str, Any], ctx: Mapping[str, str]) -> Row:
    row = _common(pos, raw, rec, ctx, "zep-edge")
    name = records.text(rec, "name")
    expired = records.parse_time(rec.get("expired_at"), "expired_at")
    reference = records.parse_time(rec.get("reference_time"), "reference_time")
    return row | {
        "type": "observation",
        "content": _content(rec, "fact"),
        "categories": [name] if name else None,
        "status": "superseded" if expired is not None else "active",
        "observed_at": reference or row["created_at"],
        "valid_from": records.parse_time(rec.get("valid_at"), "valid_at"),
        "valid_to": records.parse_time(rec.get("invalid_at"), "invalid_at"),
        "superseded_at": expired,
        "metadata": _meta(
            rec, _PROMOTED | {"fact", "name", "valid_at", "invalid_at", "expired_at", "reference_time"}
        ),
    }


def _fact(pos: int, raw: str | None, rec: dict[str, Any], ctx: Mapping[str, str]) -> Row:
    row = _common(pos, raw, rec, ctx, "zep-fact")
    return row | {
        "type": "observation",
        "content": _content(rec, "fact"),
        "observed_at": row["created_at"],
        "metadata": _meta(rec, _PROMOTED | {"fact"}),
    }


def _role(rec: Mapping[str, Any], speaker_key: str) -> tuple[str | None, str | None]:
    """(role, speaker) by the rule of PEER_FORMATS §2.4."""
    if "role_type" in rec:
        role_key, speaker = "role_type", records.text(rec, "role")
    else:
        role_key, speaker = "role", records.text(rec, speaker_key)
    value = records.text(rec, role_key)
    speaker = speaker or None
    if value is None or value.lower() == "norole":
        return None, speaker
    role = _ROLES.get(value.lower())
    if role is None:
        raise Rejected(RejectReason.BAD_VALUE, f"field {role_key}: {value!r} is not one of {_ROLE_VALUES}")
    return role, speaker


def _message(pos: int, raw: str | None, rec: dict[str, Any], ctx: Mapping[str, str]) -> Row:
    row = _common(pos, raw, rec, ctx, "zep-message")
    role, speaker = _role(rec, "name")
    reference = records.parse_time(rec.get("reference_time"), "reference_time")
    return row | {
        "type": "message",
        "content": _content(rec, "content"),
        "role": role,
        "author": speaker,
        "observed_at": reference or row["created_at"],
        "updated_at": records.parse_time(rec.get("updated_at"), "updated_at"),
        "metadata": _meta(rec, _PROMOTED | {"content", "role", "role_type", "name", "reference_time"}),
    }


_EPISODE_TYPES = {"message": "message", "text": "document", "json": "document", "fact_triple": "observation"}


def _episode(pos: int, raw: str | None, rec: dict[str, Any], ctx: Mapping[str, str]) -> Row:
    source = records.text(rec, "source")
    if source is None:
        kind = "message" if {"role", "role_type"} & rec.keys() else "document"
    else:
        kind = _EPISODE_TYPES.get(source, "document")
    row = _common(pos, raw, rec, ctx, "zep-message" if kind == "message" else "zep-episode")
    role, speaker = _role(rec, "role_name") if kind == "message" else (None, None)
    reference = records.parse_time(rec.get("reference_time"), "reference_time")
    document_time = records.parse_time(rec.get("valid_at"), "valid_at")
    meta_key = "episode_metadata" if "episode_metadata" in rec else "metadata"
    promoted = _PROMOTED | {"content", "source_description", "reference_time", "valid_at"}
    if kind == "message":
        promoted |= {"role", "role_type", "role_name"}
    return row | {
        "type": kind,
        "content": _content(rec, "content"),
        "role": role,
        "author": speaker,
        "source": records.text(rec, "source_description") or None,
        "observed_at": reference or document_time or row["created_at"],
        "metadata": _meta(rec, promoted, meta_key),
    }


_MAPPERS = {"edge": _edge, "fact": _fact, "message": _message, "episode": _episode}
