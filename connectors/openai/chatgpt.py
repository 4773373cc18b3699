"""One ChatGPT conversation (PEER_FORMATS.md §4.1) → staged rows, one per node of its ``mapping``.

The transcript is the path from ``current_node`` up through ``parent`` links; messages on it are
``active``, messages on other branches (edits, regenerations) ``superseded``. Without a usable
``current_node`` no branch can be told from another, and every message is taken as on the path.
A node is skipped, with a counted skip reason, when it holds no message (``empty_node``) or is
not shown in the conversation (``hidden_node``): marked ``is_visually_hidden_from_conversation``,
a ``system`` message that is not the user's own (``is_user_system_message``), a ``tool`` message
(the ``bio`` tool's "Model set context updated." included), an assistant message addressed to a
tool (``recipient`` other than ``all``), hidden reasoning (``thoughts``, ``reasoning_recap``), or
a message with no text and no attachment at all. Memory writes (an assistant message to
``recipient: "bio"``, and a non-empty ``model_editable_context.model_set_context``) are checked
first and become ``observation`` episodes, whatever their visibility; so are the user's custom
instructions (once per distinct text) and canvas documents (``document`` versions), see
``connectors.openai.kept``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from itertools import count
from typing import Any

from connectors.kit import records
from connectors.kit.records import Rejected, Row
from connectors.openai import kept
from connectors.schema import RejectReason

#: The text fields of the content types without ``parts`` (``text`` for any other type).
_TEXT_FIELDS = {
    "tether_browsing_display": ("result",),
    "reasoning_recap": ("content",),
    "model_editable_context": ("model_set_context",),
    "user_editable_context": ("user_profile", "user_instructions"),
}
_HIDDEN_TYPES = ("thoughts", "reasoning_recap")
#: Message fields mapped to canonical columns (everything else goes to metadata ``_source``).
_PROMOTED = ("id", "author", "content", "create_time", "update_time", "metadata")


class Conversation:
    """The facts every node of one conversation shares."""

    def __init__(self, conv: Mapping[str, Any], user_id: str | None) -> None:
        self.user_id = user_id
        self.id = records.text(conv, "conversation_id") or records.text(conv, "id", required=True)
        mapping = conv.get("mapping")
        if not isinstance(mapping, dict):
            if mapping is None:
                raise Rejected(
                    RejectReason.MISSING_FIELD, f"conversation {self.id}: field mapping is missing"
                )
            kind = records.json_type(mapping)
            raise Rejected(RejectReason.WRONG_TYPE, f"conversation {self.id}: field mapping is a JSON {kind}")
        self.mapping: dict[str, Any] = mapping
        self.extra = {
            k: v
            for k, v in conv.items()
            if k != "mapping" and v is not None and not (k in ("id", "conversation_id") and v == self.id)
        }
        records.check_depth(self.extra, f"conversation {self.id}")
        self.path = _transcript(mapping, conv.get("current_node"))
        self._times = (conv.get("create_time"), conv.get("update_time"))

    def fallback_time(self) -> tuple[datetime | None, str | None]:
        """The conversation's own time, for messages whose ``create_time`` is null."""
        for value, field in zip(self._times, ("create_time", "update_time"), strict=True):
            parsed = records.parse_time(value, f"conversation {field}", unit="s")
            if parsed is not None:
                return parsed, f"conversation.{field}"
        return None, None


def _transcript(mapping: Mapping[str, Any], current: Any) -> set[str] | None:
    """Node ids from ``current_node`` to the root, or None when there is no usable current node."""
    if not isinstance(current, str) or current not in mapping:
        return None
    path: set[str] = set()
    node: Any = current
    while isinstance(node, str) and node in mapping and node not in path:  # a cycle ends the walk
        path.add(node)
        entry = mapping[node]
        node = entry.get("parent") if isinstance(entry, dict) else None
    return path


def rows(conv: Conversation, counter: count[int]) -> Iterator[Row]:
    """One staged row per node, in the order the file lists them."""
    for node_id, node in conv.mapping.items():
        pos = next(counter)
        raw = records.dumps(node)
        where = f"conversation {conv.id} node {node_id}"
        try:
            yield _node_row(conv, node_id, node, pos, raw, where)
        except Rejected as exc:
            yield records.reject(pos, raw, exc.reason, f"{where}: {exc.detail}")


def _node_row(conv: Conversation, node_id: str, node: Any, pos: int, raw: str, where: str) -> Row:
    if not isinstance(node, dict):
        raise Rejected(RejectReason.NOT_AN_OBJECT, f"node is a JSON {records.json_type(node)}")
    if raw.count("{") + raw.count("[") > records.MAX_DEPTH:  # fewer brackets cannot nest deeper
        records.check_depth(node, "node")
    message = node.get("message")
    if message is None:
        raise Rejected(RejectReason.EMPTY_NODE, "message is null")
    message = _object(message, "message")
    author = _object(message.get("author") or {}, "message.author")
    meta = message.get("metadata")
    flags = meta if isinstance(meta, dict) else {}
    role = records.text(author, "role")
    recipient = records.text(message, "recipient")
    content = _object(message.get("content"), "message.content")
    content_type = records.text(content, "content_type")
    found = kept.instructions(content, content_type, flags)
    if found is None and role == "assistant":
        found = kept.canvas(recipient, content, conv.id, node_id, conv.mapping)
    memory = recipient == "bio" or content_type == "model_editable_context"
    hidden = "" if memory or found is not None else _hidden(role, recipient, content_type, flags)
    if hidden:
        raise Rejected(RejectReason.HIDDEN_NODE, hidden)
    body, pointers = (found.content, []) if found is not None else _text(content, content_type)
    if not body and not pointers:
        raise Rejected(RejectReason.HIDDEN_NODE, f"message ({content_type}) shows no text")
    created = records.parse_time(message.get("create_time"), "message.create_time", unit="s")
    updated = records.parse_time(message.get("update_time"), "message.update_time", unit="s")
    rest: dict[str, Any] = {k: v for k, v in message.items() if k not in _PROMOTED}
    rest["author"] = {k: v for k, v in author.items() if k != "role" and v not in (None, {})} or None
    promoted = ("parts", *_TEXT_FIELDS.get(content_type or "", ("text",)))
    if found is not None:
        promoted = (*promoted, *found.promoted)
        rest.update(found.extra)
    rest["content"] = {k: v for k, v in content.items() if k not in promoted}
    rest["asset_pointers"] = pointers or None
    if message.get("id") != node_id:
        rest["message_id"] = message.get("id")
    rest["node"] = {k: v for k, v in node.items() if k in ("parent", "children")}
    rest["conversation"] = conv.extra
    observed = created
    if observed is None:
        observed, rest["observed_at_from"] = conv.fallback_time()
    on_path = conv.path is None or node_id in conv.path or (found is not None and found.always_active)
    return {
        "pos": pos,
        "raw": raw,
        "idempotency_key": found.key if found else f"chatgpt:{conv.id}:{node_id}",
        "source_id": found.source_id if found else f"{conv.id}:{node_id}",
        "type": found.type if found else "observation" if memory else "message",
        "content": body,
        "role": role,
        "source": "chatgpt",
        "author": records.text(author, "name"),
        "user_id": conv.user_id,
        "session_id": conv.id,
        "status": "active" if on_path else "superseded",
        "metadata": records.metadata(meta, rest),
        "observed_at": observed,
        "created_at": created,
        "updated_at": updated,
        "scope_user_id": conv.user_id,
        "scope_conversation_id": conv.id,
        "scope_session_id": conv.id,
    }


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        kind = records.json_type(value)
        reason = RejectReason.MISSING_FIELD if value is None else RejectReason.WRONG_TYPE
        raise Rejected(reason, f"field {field} is a JSON {kind}, expected an object")
    return value


def _hidden(role: str | None, recipient: str | None, content_type: str | None, flags: dict[str, Any]) -> str:
    """Why a message is not shown in the conversation, or ``""``."""
    if flags.get("is_visually_hidden_from_conversation"):
        return "metadata.is_visually_hidden_from_conversation is true"
    if role == "system" and not flags.get("is_user_system_message"):
        return "a system message the user did not write"
    if role == "tool":
        return "a tool message"
    if role == "assistant" and recipient not in (None, "all"):
        return f"an assistant message to the tool {recipient!r}"
    if content_type in _HIDDEN_TYPES:
        return f"hidden reasoning ({content_type})"
    return ""


def _text(content: Mapping[str, Any], content_type: str | None) -> tuple[str, list[Any]]:
    """The message text, and the non-text parts (asset pointers) kept for metadata."""
    if "parts" in content:
        parts = content["parts"]
        if not isinstance(parts, list):
            kind = records.json_type(parts)
            raise Rejected(
                RejectReason.WRONG_TYPE, f"field content.parts is a JSON {kind}, expected an array"
            )
        texts: list[str] = []
        pointers: list[Any] = []
        for i, part in enumerate(parts):
            if isinstance(part, str):
                if part:
                    texts.append(part)
            elif isinstance(part, dict):
                pointers.append(part)
            else:
                kind = records.json_type(part)
                raise Rejected(RejectReason.WRONG_TYPE, f"field content.parts[{i}] is a JSON {kind}")
        return "\n".join(texts), pointers
    fields = _TEXT_FIELDS.get(content_type or "", ("text",))
    found = [records.text(content, f) for f in fields]
    if all(t is None for t in found) and content_type != "model_editable_context":
        raise Rejected(RejectReason.MISSING_FIELD, f"content of type {content_type} has no field {fields[0]}")
    return "\n\n".join(t for t in found if t), []
