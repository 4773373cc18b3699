"""ChatGPT nodes that hold memory although the conversation does not show them (PEER_FORMATS.md §4.1).

**Custom instructions.** What the user wrote in Settings → Personalization about themselves and
how the model should answer rides along in every conversation it was in force for:

- 2023 exports: a ``system`` node with ``metadata.is_user_system_message: true``, empty ``parts``,
  the text in ``metadata.user_context_message_data`` (``about_user_message``,
  ``about_model_message``);
- 2024–25 exports: a (hidden) node whose content is ``user_editable_context`` (``user_profile``,
  ``user_instructions``).

The text (the two fields joined by a blank line) is one ``observation`` per distinct text, not one
per conversation: its ``source_id`` and idempotency key are ``custom-instructions:<sha256 of the
text>``, so the same instructions carried by 300 conversations are one episode — the store keeps
the newest appearance (latest ``create_time``, else the conversation's) and counts the other 299
as ``duplicate`` rejects, and another export's copy is a version of the same episode. The episode
carries the conversation it was kept from (``session_id``, ``{conversation_id}``, ``observed_at``)
and keeps each field apart under ``metadata._source.custom_instructions``.

**Canvas documents.** An assistant message to ``canmore.create_textdoc`` holds, as JSON text, the
document the user saw (``name``, ``type``, ``content``); one to ``canmore.update_textdoc`` holds
``updates`` (``[{"pattern", "replacement", "multiple"?}]``). Each is a ``document`` episode, a
version of one document: ``source_id`` ``<conversation_id>:textdoc:<node id of the create>`` (an
update belongs to the nearest create above it in the tree), idempotency key the node's own, so the
create and each update are versions ordered by time. An update whose one pattern is ``.*`` (or
``^.*$``, ``(?s).*``: the whole text) replaces the document, and its content is the new full text;
any other update is kept as its replacement text(s), with ``_source.canvas.partial = true`` and the
patterns, since applying a regular expression from a file is not something an importer should do.
Arguments that are not a JSON object are one ``invalid_json`` / ``wrong_type`` reject.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.kit import records
from connectors.kit.records import Rejected
from connectors.schema import RejectReason

CREATE = "canmore.create_textdoc"
UPDATE = "canmore.update_textdoc"
_PROFILE_FIELDS = ("user_profile", "user_instructions")
_LEGACY_FIELDS = ("about_user_message", "about_model_message")
#: Patterns that match the whole document: their replacement is the new full text.
_WHOLE = frozenset({".*", "^.*$", "(?s).*", "(?s)^.*$", "[\\s\\S]*", "^[\\s\\S]*$"})


@dataclass
class Kept:
    """What a memory node becomes: its episode fields that differ from a message's."""

    type: str
    content: str
    source_id: str
    key: str
    #: Added under ``metadata._source``.
    extra: dict[str, Any] = field(default_factory=dict)
    #: Content fields that became ``content`` (dropped from ``_source.content``).
    promoted: tuple[str, ...] = ()
    #: Always ``active`` (instructions are in force whatever branch carried them).
    always_active: bool = False


def instructions(
    content: Mapping[str, Any], content_type: str | None, flags: Mapping[str, Any]
) -> Kept | None:
    """The custom instructions a node carries, or None."""
    if content_type == "user_editable_context":
        fields = {f: records.text(content, f) for f in _PROFILE_FIELDS}
        promoted: tuple[str, ...] = _PROFILE_FIELDS
    else:
        legacy = flags.get("user_context_message_data")
        if not flags.get("is_user_system_message") or not isinstance(legacy, dict):
            return None
        fields = {f: _text_field(legacy, f) for f in _LEGACY_FIELDS}
        promoted = ()
    text = "\n\n".join(t for t in fields.values() if t)
    if not text:
        return None
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    source_id = f"custom-instructions:{digest}"
    kept = {k: v for k, v in fields.items() if v}
    return Kept(
        type="observation",
        content=text,
        source_id=source_id,
        key=f"chatgpt:{source_id}",
        extra={"custom_instructions": kept},
        promoted=promoted,
        always_active=True,
    )


def _text_field(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        kind = records.json_type(value)
        raise Rejected(
            RejectReason.WRONG_TYPE,
            f"field metadata.user_context_message_data.{key} is a JSON {kind}, expected a string",
        )
    return value


def canvas(
    recipient: str | None,
    content: Mapping[str, Any],
    conv_id: str | None,
    node_id: str,
    mapping: Mapping[str, Any],
) -> Kept | None:
    """The canvas document version an assistant's ``canmore`` call holds, or None."""
    if recipient not in (CREATE, UPDATE):
        return None
    args = _arguments(content, recipient)
    if recipient == CREATE:
        body = records.text(args, "content")
        info: dict[str, Any] = {k: v for k, v in args.items() if k != "content"}
        document = node_id
    else:
        body, info = _update(args)
        document = _create_above(mapping, node_id) or node_id
        if document == node_id:
            info["document"] = "no create_textdoc above this update in the tree: a document of its own"
    info["call"] = recipient
    return Kept(
        type="document",
        content=body or "",
        source_id=f"{conv_id}:textdoc:{document}",
        key=f"chatgpt:{conv_id}:{node_id}",
        extra={"canvas": info},
        promoted=("text",),
    )


def _arguments(content: Mapping[str, Any], recipient: str) -> dict[str, Any]:
    raw = content.get("text")
    if not isinstance(raw, str):
        parts = content.get("parts")
        raw = "".join(p for p in parts if isinstance(p, str)) if isinstance(parts, list) else None
    if raw is None:
        raise Rejected(RejectReason.MISSING_FIELD, f"{recipient} call has no text (its JSON arguments)")
    try:
        args = json.loads(raw)
    except (ValueError, RecursionError):
        raise Rejected(
            RejectReason.INVALID_JSON, f"{recipient} arguments are not valid JSON (cut short?): {raw[:80]!r}"
        ) from None
    if not isinstance(args, dict):
        kind = records.json_type(args)
        raise Rejected(
            RejectReason.WRONG_TYPE, f"{recipient} arguments are a JSON {kind}, expected an object"
        )
    records.check_depth(args, f"{recipient} arguments")
    return args


def _update(args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    updates = args.get("updates")
    if not isinstance(updates, list) or not all(isinstance(u, dict) for u in updates):
        kind = records.json_type(updates)
        reason = RejectReason.MISSING_FIELD if updates is None else RejectReason.WRONG_TYPE
        raise Rejected(reason, f"{UPDATE} field updates is a JSON {kind}, expected a list of objects")
    replacements = [records.text(u, "replacement") or "" for u in updates]
    patterns = [records.text(u, "pattern") for u in updates]
    info: dict[str, Any] = {k: v for k, v in args.items() if k != "updates"}
    info["updates"] = [{k: v for k, v in u.items() if k != "replacement"} for u in updates]
    if len(updates) == 1 and patterns[0] in _WHOLE:
        return replacements[0], info
    info["partial"] = True
    return "\n\n".join(r for r in replacements if r), info


def _create_above(mapping: Mapping[str, Any], node_id: str) -> str | None:
    """The nearest node above ``node_id`` that is a ``create_textdoc`` call (cycle-safe)."""
    seen = {node_id}
    node = mapping.get(node_id)
    while isinstance(node, dict):
        parent = node.get("parent")
        if not isinstance(parent, str) or parent in seen:
            return None
        seen.add(parent)
        node = mapping.get(parent)
        message = node.get("message") if isinstance(node, dict) else None
        if isinstance(message, dict) and message.get("recipient") == CREATE:
            return parent
    return None
