"""OpenAI (PEER_FORMATS.md §4): the ChatGPT data export, and Assistants/Threads API message pages.

Formats, told apart by content (never by file name):

- the export zip, read in place through fsspec: ``conversations.json`` and every shard
  ``conversations-NNN.json`` in it (in name order), and ``user.json`` for the account id. An
  entry it would read that is unsafe (``..`` or absolute name, zip bomb, encryption) becomes one
  ``unsafe_archive_entry`` reject and the rest is still read; the other entries are not opened.
  An entry that turns out broken while read (bad CRC: its data does not match the size the
  archive declares; corrupt data or header) or inflates past the bounds of ``kit.bounded`` ends
  with one reject naming it (``malformed_document``, ``unsafe_archive_entry``).
- ``conversations.json`` or one shard on its own: a JSON array of conversations,
  ``{"conversations": [...]}``, or a single conversation object, streamed one conversation at a
  time. A ``user.json`` beside it gives the account id; ``user.json`` itself is a dump of nothing.
  (A ``user.json`` that cannot be parsed leaves ``user_id`` null: a scope template that needs it
  then rejects the rows as ``unresolved_scope``.)
- an Assistants API list page ``{"object": "list", "data": [thread.message, ...]}`` (or a bare
  array of ``thread.message`` objects).

ChatGPT mapping (the walk is in ``connectors.openai.chatgpt``): each node of a conversation's
``mapping`` is one record. Messages on the path from ``current_node`` to the root are ``message``
episodes, ``active``; messages on other branches are ``superseded``; ``message: null`` nodes and hidden
system/tool/reasoning nodes are skip rejects (``empty_node``, ``hidden_node``); memory writes
(``recipient: "bio"``, ``model_editable_context``) are ``observation`` episodes. The user's custom
instructions (2023: a system node's ``metadata.user_context_message_data``; 2024–25: hidden
``user_editable_context`` nodes) are one ``observation`` per distinct text, source id
``custom-instructions:<sha256 of the text>``, so the copies other conversations carry are store
``duplicate`` s (the newest conversation's copy is kept). Canvas calls (``canmore.create_textdoc``,
``canmore.update_textdoc``) are ``document`` episodes, the create and each update versions of one
document (source id ``<conversation_id>:textdoc:<create node>``); see ``connectors.openai.kept``.
Text ``parts``
are joined with newlines, asset-pointer parts kept under ``metadata._source.asset_pointers``.
Key ``chatgpt:<conversation_id>:<node_id>``, ``source_id`` ``<conversation_id>:<node_id>``,
``session_id`` the conversation id, ``user_id`` the account from ``user.json`` (ChatGPT has no
per-message user). ``create_time``/``update_time`` are float epoch seconds (ISO text from
third-party exporters is accepted too); a message whose ``create_time`` is null is observed at the
conversation's ``create_time`` (else ``update_time``), noted as ``_source.observed_at_from``, and
keeps ``created_at`` null. The conversation's own fields (title, model, …) are kept under
``_source.conversation`` on each of its nodes. A conversation that cannot be walked (not an
object, no id, no ``mapping``) is one reject.

Assistants mapping: each message is a ``message`` episode, key
``openai-thread:<thread_id>:<msg_id>``, ``source_id`` the message id, ``session_id`` the thread,
``agent_id`` the assistant; ``created_at`` is int epoch seconds; text parts are joined, the other
parts (images, annotations) kept under ``_source.content``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from itertools import count
from typing import IO, Any

from fsspec import AbstractFileSystem

from connectors.base import Batch, Connector, ReadOptions
from connectors.errors import DumpFormatError
from connectors.kit import archive, bounded, jsonscan, records
from connectors.kit.records import Rejected, Row
from connectors.openai import chatgpt
from connectors.schema import RejectReason

NAME = "openai"
VERSION = "1.0.0"
EXPECTED = "ChatGPT export (zip or conversations.json) or OpenAI Assistants message page"

_SHARD = re.compile(r"conversations(-\d+)?\.json")
_CONVERSATION_KEYS = frozenset({"mapping", "current_node", "conversation_id"})
_ACCOUNT_KEYS = frozenset({"email", "chatgpt_plus_user", "phone_number"})
_USER_JSON_MAX = 1 << 20

Opener = Callable[[], IO[bytes]]


def read(fs: AbstractFileSystem, path: str, options: ReadOptions) -> Iterator[Batch]:
    yield from records.run(NAME, _rows(fs, path), fs, path, options)


def _rows(fs: AbstractFileSystem, path: str) -> Iterator[Row]:
    kind = records.sniff(fs, path)
    counter = count()
    if kind == "empty":
        return
    if kind == "zip":
        yield from _zip_rows(fs, path, counter)
    elif kind == "json":
        opener = functools.partial(fs.open, path, "rb")
        user_id = _sibling_user(fs, path)
        name = path.rsplit("/", 1)[-1]
        yield from _document_rows(opener, name, user_id, counter, uri=fs.unstrip_protocol(path))
    else:
        raise DumpFormatError(fs.unstrip_protocol(path), EXPECTED, f"a {kind} file")


# --- layouts -----------------------------------------------------------------------------------


_HEAD_BYTES = 1 << 12
_KINDS = {b'"': "string", b"t": "boolean", b"f": "boolean", b"n": "null"} | dict.fromkeys(
    (bytes([c]) for c in b"-0123456789"), "number"
)


def _layout(opener: Opener, uri: str) -> tuple[str, str]:
    """``(kind, ijson prefix)`` of a JSON document: ``items`` (an array), ``conversations``
    (the envelope), ``conversation`` (one object), ``page`` (Assistants list page), ``account``
    (``user.json``). Streams the top-level keys only; a foreign object raises
    :class:`DumpFormatError` naming its keys. ``Malformed`` if it breaks before saying which."""
    keys: list[str] = []
    page = False
    with opener() as f:
        head = f.read(_HEAD_BYTES).removeprefix(records.BOM).lstrip()
        if head[:1] == b"[":
            return "items", "item"
        if head[:1] != b"{":
            raise DumpFormatError(uri, EXPECTED, f"a JSON {_KINDS.get(head[:1], 'document')}")
    with opener() as f:  # walked without building values: a document nested deep costs nothing
        for key, value in jsonscan.members(f):
            keys.append(key)
            if key == "object" and value == "list":
                page = True
            if key == "conversations":
                return "conversations", "conversations.item"
            if key == "mapping":
                return "conversation", ""
            if key == "data" and page:
                return "page", "data.item"
    if "data" in keys and {"has_more", "first_id", "last_id"} & set(keys):
        return "page", "data.item"
    if "id" in keys and _ACCOUNT_KEYS & set(keys):
        return "account", ""
    shown = ", ".join(keys[:8]) or "no keys"
    raise DumpFormatError(uri, EXPECTED, f"a JSON object with keys: {shown}")


def _document_rows(
    opener: Opener, name: str, user_id: str | None, counter: count[int], *, uri: str | None
) -> Iterator[Row]:
    """Every record of one JSON document, ``name`` in the details. A dump file (``uri`` given)
    that is not this system's format raises :class:`DumpFormatError`; such an entry in an export
    zip (``uri`` None) is one ``malformed_document`` reject, and the other entries still count."""
    try:
        kind, prefix = _layout(opener, uri or name)
    except records.Malformed as exc:
        yield _broken(next(counter), name, exc)
        return
    except DumpFormatError as exc:
        if uri is not None:
            raise
        yield records.reject(
            next(counter), name, RejectReason.MALFORMED_DOCUMENT, f"{name}: not conversations; {exc.found}"
        )
        return
    if kind == "account":
        return
    with opener() as f:
        try:
            for i, item in records.json_items(f, prefix):
                if isinstance(item, Rejected):
                    problem = Rejected(item.reason, f"{name} item {i}: {item}")
                    yield records.rejected(next(counter), None, problem)
                    continue
                if uri is not None and i == 0 and kind == "items":
                    _check_first(item, uri)
                yield from _item_rows(item, f"{name} item {i}", user_id, counter, page=kind == "page")
        except records.Malformed as exc:
            yield _broken(next(counter), name, exc)


def _check_first(item: Any, uri: str) -> None:
    if isinstance(item, dict) and (
        _CONVERSATION_KEYS & item.keys() or item.get("object") == "thread.message"
    ):
        return
    keys = ", ".join(list(item)[:8]) if isinstance(item, dict) else ""
    found = f"objects with keys: {keys}" if isinstance(item, dict) else records.json_type(item) + "s"
    raise DumpFormatError(uri, EXPECTED, f"a JSON array of {found}")


def _broken(pos: int, label: str, exc: records.Malformed) -> Row:
    return records.broken(pos, exc, f"{label}: JSON breaks {exc}")


def _item_rows(
    item: Any, where: str, user_id: str | None, counter: count[int], *, page: bool
) -> Iterator[Row]:
    if page or (isinstance(item, dict) and item.get("object") == "thread.message"):
        yield _thread_message_row(item, next(counter), where)
        return
    try:
        if not isinstance(item, dict):
            raise Rejected(
                RejectReason.NOT_AN_OBJECT, f"a JSON {records.json_type(item)}, not a conversation"
            )
        conversation = chatgpt.Conversation(item, user_id)
    except Rejected as exc:
        yield records.reject(next(counter), records.dumps(item), exc.reason, f"{where}: {exc.detail}")
        return
    yield from chatgpt.rows(conversation, counter)


# --- the export zip and user.json --------------------------------------------------------------


def _zip_rows(fs: AbstractFileSystem, path: str, counter: count[int]) -> Iterator[Row]:
    uri = fs.unstrip_protocol(path)
    with archive.open_zip(fs, path, expected=EXPECTED) as zipped:
        listed = archive.entries(zipped)
        shards = sorted((e for e in listed if _SHARD.fullmatch(e.basename)), key=lambda e: e.name)
        if not shards:
            names = ", ".join(e.name for e in listed[:8]) or "no files"
            raise DumpFormatError(uri, EXPECTED, f"a zip archive without conversations*.json ({names})")
        user_id = None
        account = next((e for e in listed if e.basename == "user.json"), None)
        if account is not None and account.problem:
            yield _unsafe(next(counter), account)
        elif account is not None:
            try:
                with archive.open_entry(zipped, account) as f:
                    user_id = _user_id(f.read(_USER_JSON_MAX))
            except bounded.Unreadable as exc:
                yield _unreadable(next(counter), account, exc)
        for i, entry in enumerate(shards):
            if entry.problem:
                yield _unsafe(next(counter), entry)
                continue
            opener = functools.partial(archive.open_entry, zipped, entry)
            try:
                yield from _document_rows(opener, entry.name, user_id, counter, uri=None)
            except bounded.Unreadable as exc:  # the records before it were read
                if zipped.meter.exhausted:  # the whole archive's budget: no other entry is read
                    rest = len(shards) - i - 1
                    exc.detail += f"; the {rest:,} entries after it are not read either"
                yield _unreadable(next(counter), entry, exc)
                if zipped.meter.exhausted:
                    return


def _unsafe(pos: int, entry: archive.Entry) -> Row:
    return records.reject(
        pos, entry.name, RejectReason.UNSAFE_ARCHIVE_ENTRY, f"{entry.problem}; entry not read"
    )


def _unreadable(pos: int, entry: archive.Entry, exc: bounded.Unreadable) -> Row:
    return records.reject(pos, entry.name, exc.reason, f"{exc.detail}; the rest of the entry is not read")


def _sibling_user(fs: AbstractFileSystem, path: str) -> str | None:
    """The account id from a ``user.json`` beside an unpacked ``conversations.json``, if any."""
    sibling = path.rsplit("/", 1)[0] + "/user.json" if "/" in path else "user.json"
    if sibling == path or not fs.isfile(sibling) or (fs.size(sibling) or 0) > _USER_JSON_MAX:
        return None
    return _user_id(fs.cat_file(sibling))


def _user_id(data: bytes) -> str | None:
    try:
        account = json.loads(data.removeprefix(records.BOM))
    except ValueError:
        return None
    value = account.get("id") if isinstance(account, dict) else None
    return value if isinstance(value, str) and value else None


# --- Assistants / Threads API ------------------------------------------------------------------

_THREAD_PROMOTED = ("id", "object", "thread_id", "role", "content", "created_at", "assistant_id", "metadata")


def _thread_message_row(item: Any, pos: int, where: str) -> Row:
    raw = records.dumps(item)
    try:
        if not isinstance(item, dict):
            raise Rejected(RejectReason.NOT_AN_OBJECT, f"a JSON {records.json_type(item)}")
        if item.get("object") not in (None, "thread.message"):
            raise Rejected(
                RejectReason.BAD_VALUE, f"field object is {item.get('object')!r}, not thread.message"
            )
        records.check_depth(item, "message")
        msg_id = records.text(item, "id", required=True)
        thread_id = records.text(item, "thread_id", required=True)
        texts, kept = _thread_content(item.get("content"))
        created = records.parse_time(item.get("created_at"), "created_at", unit="s")
        rest = {k: v for k, v in item.items() if k not in _THREAD_PROMOTED}
        rest["content"] = kept or None
        return {
            "pos": pos,
            "raw": raw,
            "idempotency_key": f"openai-thread:{thread_id}:{msg_id}",
            "source_id": msg_id,
            "type": "message",
            "content": texts,
            "role": records.text(item, "role"),
            "source": "assistants",
            "agent_id": records.text(item, "assistant_id"),
            "session_id": thread_id,
            "status": "active",
            "metadata": records.metadata(item.get("metadata"), rest),
            "observed_at": created,
            "created_at": created,
            "scope_conversation_id": thread_id,
            "scope_session_id": thread_id,
            "scope_agent_id": records.text(item, "assistant_id"),
        }
    except Rejected as exc:
        return records.reject(pos, raw, exc.reason, f"{where} (thread message): {exc.detail}")


def _thread_content(content: Any) -> tuple[str, list[Any]]:
    """The text parts joined; the other parts, and the text parts' annotations, kept."""
    if not isinstance(content, list):
        kind = records.json_type(content)
        reason = RejectReason.MISSING_FIELD if content is None else RejectReason.WRONG_TYPE
        raise Rejected(reason, f"field content is a JSON {kind}, expected an array")
    texts, kept = [], []
    for i, part in enumerate(content):
        if not isinstance(part, dict):
            raise Rejected(RejectReason.WRONG_TYPE, f"field content[{i}] is a JSON {records.json_type(part)}")
        if part.get("type") == "text" and isinstance(part.get("text"), dict):
            value = records.text(part["text"], "value")
            if value:
                texts.append(value)
            annotations = part["text"].get("annotations")
            if annotations:
                kept.append({"type": "text", "annotations": annotations})
        elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
            kept.append({"type": "refusal"})
        else:
            kept.append(part)
    return "\n".join(texts), kept


CONNECTOR = Connector(
    name=NAME,
    version=VERSION,
    description="ChatGPT data export (zip, conversations.json, shards) and Assistants API message pages",
    scope_fields=("user_id", "conversation_id", "session_id", "agent_id"),
    default_scope_template="openai/conversation:{conversation_id}",
    formats=("json", "zip"),
    read_fn=read,
)
