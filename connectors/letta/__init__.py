"""Letta (formerly MemGPT), PEER_FORMATS.md §3: Agent File ``.af`` and archival passage dumps.

Formats, told apart by content (never by name):

* **Agent file, current generation** (``AgentFileSchema``): an object with ``agents`` (each with
  its ``messages``), ``blocks``, ``files``, ``tools``, ``sources``, ``groups``, ``skills``,
  ``mcp_servers``, ``metadata``, ``created_at``. Ids are file-local (``agent-0``, ``message-17``).
* **Agent file, legacy generation** (``use_legacy_format``, every file before 2025-08): one agent
  at top level with ``core_memory``, ``messages``, ``in_context_message_indices``, ``tools``,
  ``version``; no ids at all; times often naive (taken as UTC).
* Either generation **double-encoded** (a JSON string holding the document, what
  ``export_file()``'s ``str`` becomes when dumped again), with or without a BOM.
* **Archival passages** (not in the ``.af``; ``GET /v1/agents/{id}/archival-memory``): a JSON
  array or JSON Lines of passage objects (or one passage object), streamed.

An agent file is read whole (a few MB): :mod:`connectors.letta.document` hashes the very bytes it
parses (hence its own parser over ``records.read_whole`` rather than ``records.load_document``).
A broken one (cut short, invalid JSON or UTF-8 past some point) keeps every record finished
before the break and ends with one ``truncated_document`` (the file ends inside the document) /
``malformed_document`` / ``invalid_utf8`` reject naming where it broke; a record nested deeper
than ``records.MAX_DEPTH`` is one ``too_deep`` reject. A file broken *as published* (a document
cut off, then a complete document appended; or two documents back to back) gives every complete
document whole (keys ``<sha256>/<n>:<local id>`` for the n-th document after the first), the cut
one's finished records, and one ``truncated_document`` reject naming where it is cut and where
the next begins; finished records of an agent whose name and id were cut off (legacy files write
them after ``messages``) are ``truncated_document`` rejects too: nothing says whose they are.
Mapping (``source`` = ``agent_file`` or ``archival_memory``):

* A **message** becomes a ``message`` episode at its ``created_at``, with the text Letta really
  shows: for an assistant, the ``message`` argument of its ``send_message`` tool calls (then the
  content parts, MemGPT's inner thoughts, stay in metadata); a user turn that is a
  ``{"type": "user_message", "message": …}`` wrapper is unwrapped. Roles: ``function`` → ``tool``,
  ``summary`` → ``system``. Author: the message ``name``, else the agent (assistant) or
  ``sender_id`` (user). Metadata ``_letta.in_context`` says whether the message was in the agent's
  context window (from ``in_context_message_ids``, or the legacy ``in_context_message_indices``).
* Skipped on purpose, each a skip reject (``hidden_node`` / ``empty_node``) that keeps the raw
  record: every compiled system prompt (the agent's ``system`` plus the blocks rendered in, both
  imported on their own): the first system message, and each copy Letta recompiles when memory
  changes, known by its markers (``### Memory [last modified:``, ``Core memory shown below``,
  ``<memory_blocks>``, ``<memory_metadata>``, ``<base_instructions>``) or by starting with the
  agent's ``system``; ``heartbeat``, ``login`` and ``system_alert`` wrappers (Letta talking to
  itself, not the user); an agent's inner thoughts and tool calls without ``send_message`` when the
  agent speaks only through ``send_message`` (``memgpt_agent``, ``memgpt_v2_agent``, or any agent
  that ever calls it); assistant messages with only tool calls; ``send_message``'s own receipts
  (a tool message named ``send_message``, or answering a ``send_message`` call through its
  ``tool_call_id`` or a ``tool_returns[].tool_call_id``: real files name it null or after the
  agent);
  ``approval`` steps; messages, blocks, files and agents without text.
* An **agent** becomes a ``document`` episode whose content is its ``system`` prompt, observed at
  its ``created_at`` (legacy) or the file's ``created_at``; its configuration (tool rules, LLM and
  embedding settings, ``in_context_message_ids``, ``files_agents``…) is its metadata, and the
  file-level keys (``metadata.revision_id``, ``created_at``) are under ``_letta.agent_file``.
  Secret values (``tool_exec_environment_variables``, ``secrets``) are replaced by ``<redacted>``.
* A **memory block** (``blocks`` / ``core_memory``) becomes a ``document`` episode with its
  ``label`` as category, observed at its ``updated_at`` or ``created_at``, else (blocks carry no
  time in the current generation) the file's ``created_at`` or, legacy, the agent's. A block used
  by several agents is scoped to the first and names them all in ``_letta.agents``.
* A **file** (``files[]``) becomes a ``document`` episode of its ``content`` text.
* **Tools, sources, groups, skills and MCP servers** are agent configuration, not memory: each
  is a ``hidden_node`` skip reject (MCP servers without their raw text: it may hold credentials).
* A **passage** becomes a ``document`` episode at its ``created_at``; ``is_deleted`` → status
  ``deleted`` (a tombstone, never a live fact); ``agent_id`` (older servers) or ``archive_id``.

Identity: agent-file ids are local to the file (every export numbers from ``message-0``), so
``source_id`` is ``<sha256 of the file>:<local id>`` (``messages[3]``, ``core_memory[0]``,
``agent`` in the legacy files, which have no ids) and the idempotency key
``letta:<sha256>:<local id>``. Re-importing the same file gives the same bytes, so the same
keys and episode ids, and the store replaces the dump's partition: exactly once. A new export of
the same agent is other bytes, so a new snapshot with its own keys (Letta renumbers ids on every
export, nothing stable links two exports; ``content_sha256`` finds the repeated texts).
Passages have server-wide ids: key ``letta-passage:<id>``, stable across exports.

Scope placeholders: ``agent`` (the agent's name, else its id; for passages ``agent_id`` or
``archive_id``), ``agent_name``, ``agent_id``, ``archive_id``, ``user_id`` (from a ``user:<id>``
tag: Letta has no user id). Embedding vectors (``embedding``, zero-padded to 4096 dims) are
dropped everywhere, raw texts included; an ``embedding`` model handle (a string) is kept.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fsspec import AbstractFileSystem

from connectors.base import Batch, Connector, ReadOptions
from connectors.errors import DumpFormatError
from connectors.kit import records, sources
from connectors.kit.records import Rejected, Row, ident, json_type, parse_time, str_list, text
from connectors.letta.agentfile import (
    AgentFile,
    metadata,
    placed,
    raw_text,
    user_from_tags,
)
from connectors.letta.document import Document, read_documents
from connectors.schema import RejectReason

NAME = "letta"
VERSION = "1.0.0"

_EXPECTED = (
    "Letta agent file (.af: an object with agents and blocks, or a legacy agent with core_memory) "
    "or archival passages dump (a JSON array or JSON Lines of passages)"
)
_PASSAGE_PROMOTED = ("id", "text", "is_deleted", "created_at", "updated_at", "tags", "agent_id")


def read(fs: AbstractFileSystem, path: str, options: ReadOptions) -> Iterator[Batch]:
    """Yield the Letta agent file or passages dump at ``path`` as canonical batches."""
    kind = records.sniff(fs, path)
    if kind == "empty":
        return
    uri = fs.unstrip_protocol(path)
    if kind != "json":
        raise DumpFormatError(uri, _EXPECTED, f"a {kind} file")
    rows: Iterable[Row]
    shape = _shape(fs, path)
    if shape == "array":
        rows = _passages(_array_items(fs, path), _item_place, uri)
    elif shape == "lines":
        rows = _passages(_lines(fs, path), _line_place, uri)
    else:
        rows = _document(fs, path, uri)
    yield from records.run(NAME, rows, fs, path, options)


#: How much of the head is looked at to tell a passages JSON Lines file from one document.
_HEAD_BYTES = 1 << 16


def _shape(fs: AbstractFileSystem, path: str) -> str:
    """``array`` (passages), ``lines`` (JSON Lines of passages) or ``document`` (an agent file,
    possibly double-encoded), from the head of the file.

    An object whose first line is only ``{`` is a pretty-printed document, one on a single line a
    compact one; a first line holding a whole passage, or followed by other lines that start at
    the margin (not a document's indented body), is JSON Lines.
    """
    with fs.open(path, "rb") as f:
        head = f.read(_HEAD_BYTES).removeprefix(records.BOM).lstrip()
    if head[:1] == b"[":
        return "array"
    if head[:1] != b"{":
        return "document"
    first, _, rest = head.partition(b"\n")
    if first.strip() == b"{":
        return "document"
    if _is_passage(_object_line(first)):
        return "lines"
    later = [line for line in rest.split(b"\n")[:50] if line.strip()]
    at_margin = [line for line in later if line[:1] not in (b" ", b"\t", b"}", b"]", b"\r")]
    return "lines" if at_margin else "document"


def _object_line(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None


def _document(fs: AbstractFileSystem, path: str, uri: str) -> Iterator[Row]:
    docs = read_documents(fs, path, expected=_EXPECTED)
    rows: Iterable[Row]
    if len(docs) > 1:  # broken as published: every document, each an agent file or a reject
        rows = itertools.chain.from_iterable(_agent_file_or_reject(doc, len(docs)) for doc in docs)
    else:
        rows = _one_document(docs[0], uri)
    for pos, row in enumerate(rows):
        row["pos"] = pos
        yield row


def _agent_file_or_reject(doc: Document, count: int) -> Iterable[Row]:
    if isinstance(doc.value, dict):
        return AgentFile(doc).rows()
    if doc.broken is not None:
        return [records.rejected(0, None, doc.broken)]
    found = f"a JSON {json_type(doc.value)}"
    detail = f"document {doc.index + 1} of {count} is {found}, not a Letta agent file"
    return [records.reject(0, raw_text(doc.value), RejectReason.MALFORMED_DOCUMENT, detail)]


def _one_document(doc: Document, uri: str) -> Iterable[Row]:
    value = doc.value
    if isinstance(value, dict) and ("agents" in value or _is_legacy(value)):
        return AgentFile(doc).rows()
    if isinstance(value, list) or _is_passage(value):  # double-encoded passages
        items = [
            (i, v) for i, v in enumerate(value if isinstance(value, list) else [value]) if doc.finished(v)
        ]
        ends = [records.rejected(len(items), None, doc.broken)] if doc.broken else []
        return itertools.chain(_passages(items, _item_place, uri), ends)
    if doc.broken is not None and not isinstance(value, dict):
        return [records.rejected(0, None, doc.broken)]
    found = f"a JSON object with keys: {', '.join(list(value)[:8]) or 'no keys'}"
    if not isinstance(value, dict):
        found = f"a JSON {json_type(value)}"
    raise DumpFormatError(uri, _EXPECTED, found)


def _is_legacy(value: dict[str, Any]) -> bool:
    return "core_memory" in value or ("messages" in value and ("version" in value or "agent_type" in value))


def _is_passage(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    ident_ = value.get("id")
    return "text" in value or (isinstance(ident_, str) and ident_.startswith("passage-"))


def _array_items(fs: AbstractFileSystem, path: str) -> Iterator[tuple[int, Any]]:
    with fs.open(path, "rb") as f:
        try:
            for pos, item in records.json_items(f, "item"):
                yield pos, _BadLine(None, item) if isinstance(item, Rejected) else item
        except records.Malformed as exc:
            problem = exc.rejected(f"the passages array breaks off or turns invalid: {exc}")
            yield exc.pos, _BadLine(None, problem)


def _item_place(pos: int) -> str:
    return f"item {pos}"


def _line_place(pos: int) -> str:
    return f"line {pos + 1}"


@dataclass(frozen=True)
class _BadLine:
    """A record that could not even be parsed: its text and why."""

    raw: str | None
    problem: Rejected


def _lines(fs: AbstractFileSystem, path: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value or :class:`_BadLine`) for each non-blank line of JSON Lines."""
    for number, line, reason, detail in sources.bounded_lines(fs, path):
        where = f"line {number + 1}"
        if line is None:  # too long or too deep: refused unparsed
            refused = Rejected(RejectReason(reason or "malformed_document"), detail or where)
            yield number, _BadLine(None, refused)
            continue
        try:
            textual = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = line.decode("utf-8", errors="backslashreplace")
            problem = Rejected(RejectReason.INVALID_UTF8, f"{where} is not valid UTF-8 at byte {exc.start}")
            yield number, _BadLine(bad, problem)
            continue
        try:
            yield number, json.loads(textual)
        except RecursionError:
            problem = Rejected(RejectReason.TOO_DEEP, f"{where} nests too deep to parse")
            yield number, _BadLine(textual, problem)
        except ValueError as exc:
            problem = Rejected(RejectReason.INVALID_JSON, f"{where} is not valid JSON: {exc}")
            yield number, _BadLine(textual, problem)


def _passages(items: Iterable[tuple[int, Any]], place: Callable[[int], str], uri: str) -> Iterator[Row]:
    """Passage rows; the first record that parses must look like a passage, or the whole dump is
    not this system's (checked before anything is yielded)."""
    checked = False
    for pos, item in items:
        if isinstance(item, _BadLine):
            yield records.rejected(pos, item.raw, item.problem)
            continue
        if not checked:
            if isinstance(item, dict) and not _is_passage(item):
                keys = ", ".join(list(item)[:8]) or "no keys"
                raise DumpFormatError(uri, _EXPECTED, f"records with keys: {keys}")
            checked = isinstance(item, dict)
        yield _passage(pos, item, place(pos))


def _passage(pos: int, item: Any, where: str) -> Row:
    raw = raw_text(item)
    try:
        item = records.record_object(item, where)
        local = ident(item, "id", required=True)
        where = f"passage {local}"
        content = text(item, "text", required=True)
        assert content is not None
        if not content.strip():
            raise Rejected(RejectReason.EMPTY_NODE, f"{where}: the passage has no text")
        deleted = item.get("is_deleted")
        if deleted is not None and not isinstance(deleted, bool):
            raise Rejected(
                RejectReason.WRONG_TYPE,
                f"field is_deleted is a JSON {json_type(deleted)}, expected a boolean",
            )
        created = parse_time(item.get("created_at"), "created_at")
        tags = str_list(item.get("tags"), "tags")
        agent_id = text(item, "agent_id")
        archive_id = text(item, "archive_id")
        user_id = user_from_tags(tags)
        return {
            "pos": pos,
            "raw": raw,
            "idempotency_key": f"letta-passage:{local}",
            "source_id": local,
            "type": "document",
            "content": content,
            "source": "archival_memory",
            "user_id": user_id,
            "agent_id": agent_id,
            "status": "deleted" if deleted else "active",
            "tags": tags,
            "metadata": metadata(item, _PASSAGE_PROMOTED, None),
            "observed_at": created,
            "created_at": created,
            "updated_at": parse_time(item.get("updated_at"), "updated_at"),
            "scope_agent": agent_id or archive_id,
            "scope_agent_id": agent_id,
            "scope_archive_id": archive_id,
            "scope_user_id": user_id,
        }
    except Rejected as exc:
        return placed(pos, raw, exc, where)


CONNECTOR = Connector(
    name=NAME,
    version=VERSION,
    description=(
        "Letta Agent File (.af, current multi-entity and legacy single-agent, double-encoded too): "
        "messages, memory blocks, files, agents; archival passage dumps (array or JSON Lines)."
    ),
    scope_fields=("agent", "agent_name", "agent_id", "archive_id", "user_id"),
    default_scope_template="agent:{agent}",
    formats=("json", "jsonl"),
    read_fn=read,
)
