"""Memsolus memory exports (PEER_FORMATS.md §5.2): JSON, JSON Lines, CSV and Markdown.

The format is told from the content: a JSON array of memory objects, or an object holding that
array under ``memories``, ``data`` or ``results``; JSON Lines; CSV whose header names at least
``id``, ``content``, ``user_id`` and ``created_at`` (any order; other columns kept); Markdown
(first non-blank line starts with ``#``) in this layout, the one :func:`markdown_items` accepts::

    # Memsolus export                    <- anything before the first "## " heading is preamble
    ## mem_8Jk2P0qz                      <- one entry per level-2 heading: the heading is the id
                                            (surrounding backticks allowed)
    - **user_id:** user_123              <- field list right after the heading (blank lines before
    - **priority:** HIGH                    it allowed): "- **name:** value" or "- **name**: value",
    - **categories:** preferences, engineering      one per line;
    - **metadata:** {"origin": "chat"}   <- categories comma-separated or a JSON array; metadata
    - **created_at:** 2025-06-01T12:00:00.000Z      JSON; an empty value, or "—" ("–", "-"), is null
                                         <- blank line
    The user prefers TypeScript          <- content: every line after that, up to the next entry,
    for new services.                       surrounding blank lines and a trailing "---" dropped

or the other way round, just as plausible (the layout is undocumented): the content paragraph
right after the heading, then a blank line and the field list ending the entry (before a trailing
``---``). A field list is a run of lines starting ``- **``: the one right after the heading, else
the one ending the entry.

A "## " line inside a fenced code block (```` ``` ```` or ``~~~``) is content, not a new entry.
In the field list, a line that is not a field, or a field given twice, makes the entry a
``bad_value`` reject naming the line; an entry with no field list before or after its text is a
``missing_field`` reject naming its line. Only a Markdown file that does not call itself a
Memsolus export (title) and whose first entry has no field list, or that has no entry at all, is
not one (``DumpFormatError``, naming the line).

Mapping: one ``observation`` episode per memory; ``source_id`` = ``id``, idempotency key
``memsolus:<id>``; ``user_id``/``agent_id``/``session_id`` kept (and scope placeholders);
``priority`` upper-cased to ``LOW|MEDIUM|HIGH`` (anything else is ``bad_value``); ``status``
``PENDING``/``PROCESSING``/``READY`` → ``active``, ``CONSOLIDATED`` (merged into another memory)
→ ``superseded``, another value → ``bad_value``; ``categories`` a list (CSV cell: a JSON array or
``;``-joined); ``created_at``/``updated_at`` ISO 8601 (a number is ``bad_timestamp``: no unit is
documented), ``observed_at`` = ``created_at``, else ``updated_at``. The ``metadata`` object (CSV:
a JSON cell) becomes the canonical metadata; every other field (``layer``…) is kept under its
``_source`` key; ``embedding`` vectors are dropped.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

from fsspec import AbstractFileSystem

from connectors.base import Batch, Connector, ReadOptions
from connectors.errors import DumpFormatError
from connectors.kit import records, tabular
from connectors.kit.records import (
    Rejected,
    Row,
    ident,
    metadata,
    parse_time,
    reject,
    rejected,
    str_list,
    text,
)
from connectors.kit.tabular import Item
from connectors.schema import MAX_CONTENT_BYTES, RejectReason

NAME = "memsolus"
VERSION = "1.0.0"

_EXPECTED = "Memsolus export (a JSON array or {memories: [...]}, JSON Lines, CSV or Markdown)"
_ENVELOPE_KEYS = ("memories", "data", "results")
_CSV_COLUMNS = (("id",), ("content",), ("user_id",), ("created_at",))
_PROMOTED = frozenset(
    {
        "id",
        "content",
        "user_id",
        "agent_id",
        "session_id",
        "priority",
        "status",
        "categories",
        "metadata",
        "created_at",
        "updated_at",
    }
)
_DROPPED = frozenset({"embedding"})
_STATUSES = {"PENDING": "active", "PROCESSING": "active", "READY": "active", "CONSOLIDATED": "superseded"}
#: An entry holding more text than this is not read further (its content is far over the limit).
_MAX_ENTRY_CHARS = 8 << 20


def read(fs: AbstractFileSystem, path: str, options: ReadOptions) -> Iterator[Batch]:
    found = tabular.items(
        fs,
        path,
        expected=_EXPECTED,
        envelope_keys=_ENVELOPE_KEYS,
        csv_columns=_CSV_COLUMNS,
        text_reader=(_is_markdown, markdown_items),
    )
    yield from records.run(NAME, tabular.staged(found, _stage), fs, path, options)


def _stage(item: Item) -> Row:
    rec = item.fields
    from_text = item.kind != "json"
    source_id = ident(rec, "id")
    user_id, agent_id, session_id = text(rec, "user_id"), text(rec, "agent_id"), text(rec, "session_id")
    priority = text(rec, "priority")
    status = text(rec, "status")
    if from_text:
        sep = ";" if item.kind == "csv" else ","
        categories = tabular.text_list(rec.get("categories"), "categories", sep=sep)
        source_meta = tabular.json_text(rec.get("metadata"), "metadata")
    else:
        categories = str_list(rec.get("categories"), "categories")
        source_meta = rec.get("metadata")
    created_at = parse_time(rec.get("created_at"), "created_at")
    updated_at = parse_time(rec.get("updated_at"), "updated_at")
    rest = {k: v for k, v in rec.items() if k not in _PROMOTED and k not in _DROPPED}
    return {
        "pos": item.pos,
        "raw": item.raw,
        "idempotency_key": None if source_id is None else f"{NAME}:{source_id}",
        "source_id": source_id,
        "type": "observation",
        "content": text(rec, "content"),
        "user_id": user_id,
        "agent_id": agent_id,
        "session_id": session_id,
        "priority": _upper(priority),
        "status": _status(status),
        "categories": categories,
        "metadata": metadata(source_meta, rest),
        "observed_at": created_at or updated_at,
        "created_at": created_at,
        "updated_at": updated_at,
        "scope_user_id": user_id,
        "scope_agent_id": agent_id,
        "scope_session_id": session_id,
    }


def _upper(value: str | None) -> str | None:
    """Priorities compare case-insensitively (``high`` is ``HIGH``); a blank one is null."""
    return value.strip().upper() or None if value is not None else None


def _status(value: str | None) -> str:
    if value is None or not value.strip():
        return "active"
    status = _STATUSES.get(value.strip().upper())
    if status is None:
        raise Rejected(RejectReason.BAD_VALUE, f"status {value!r} is not one of {'|'.join(_STATUSES)}")
    return status


# --- Markdown ----------------------------------------------------------------------------------

# No lazy group before a trailing ``\s*``: on a long run of spaces that backtracks quadratically
# (a 1 MB line took minutes). Values are stripped by the caller instead.
_ENTRY = re.compile(r"##(\s.*)?")
_FIELD = re.compile(r"[-*]\s+\*\*(?:(\w+):\*\*|(\w+)\*\*\s*:)(.*)")
_FENCE = re.compile(r"\s{0,3}(```|~~~)")
_FIELDISH = re.compile(r"[-*]\s+\*\*")
_RULES = ("---", "***", "___")
#: Field values that mean "no value": empty, or the dash a table or an export prints for null.
_NULLS = ("", "—", "–", "-")


def _is_markdown(first_line: str) -> bool:
    return first_line.lstrip().startswith("#")


def markdown_items(fs: AbstractFileSystem, path: str) -> Iterator[Item | Row]:
    """The entries of a Markdown export (layout in the module docstring); ``pos`` = entry index."""
    uri = fs.unstrip_protocol(path)
    pos = -1
    title = ""
    entry: list[str] = []
    size = 0
    start = 0
    fence: str | None = None
    with fs.open(path, "rb") as f:
        stream = io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline=None)
        # A line longer than an entry may be is not held: its size alone makes the entry too large.
        lines = tabular.text_lines(stream, limit=_MAX_ENTRY_CHARS)
        for number, (line, length) in enumerate(lines, start=1):
            marker = _FENCE.match(line)
            if marker and (fence is None or marker.group(1) == fence):
                fence = marker.group(1) if fence is None else None
            heading = fence is None and not marker and _ENTRY.fullmatch(line)
            if heading:
                if pos >= 0:
                    yield _entry(pos, entry, start, size, uri, title)
                pos, entry, size, start = pos + 1, [line], length, number
            elif pos < 0:
                title = title or (line.strip()[:200] if line.strip() else "")
            elif size <= _MAX_ENTRY_CHARS:
                entry.append(line)
                size += length + 1
            else:
                size += length + 1  # counted, no longer kept
    if pos >= 0:
        yield _entry(pos, entry, start, size, uri, title)
    elif "memsolus" not in title.lower():
        found = f"a Markdown document without '## <id>' entries, titled {title[:80]!r}"
        raise DumpFormatError(uri, "Memsolus Markdown export", found)


def _entry(pos: int, lines: list[str], start: int, size: int, uri: str, title: str) -> Item | Row:
    raw = "\n".join(lines).rstrip()
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        return reject(
            pos,
            tabular.escaped(raw),
            RejectReason.INVALID_UTF8,
            f"entry at line {start} is not valid UTF-8; bytes kept escaped",
        )
    if size > _MAX_ENTRY_CHARS:
        return reject(
            pos,
            raw[:1000] + "…",
            RejectReason.PAYLOAD_TOO_LARGE,
            f"entry at line {start} holds {size} characters; the content limit is {MAX_CONTENT_BYTES} bytes",
        )
    heading = _ENTRY.fullmatch(lines[0])
    assert heading is not None
    ident_ = _unquote(heading.group(1) or "") or None
    try:
        fields, content = _parse_entry(lines, start)
    except Rejected as exc:
        return rejected(pos, raw, exc)
    if not fields:
        if pos == 0 and "memsolus" not in title.lower():  # nothing says this is an export at all
            found = f"a Markdown document whose first entry ({lines[0]!r}, line {start}) has no field list"
            raise DumpFormatError(uri, "Memsolus Markdown export", found)
        detail = (
            f"entry {ident_ or '(no id)'} at line {start} has no field list ('- **name:** value' lines) "
            "before or after its text"
        )
        return reject(pos, raw, RejectReason.MISSING_FIELD, detail)
    fields["id"] = ident_
    fields["content"] = content
    return Item(pos, raw, fields, "markdown")


def _parse_entry(lines: list[str], start: int) -> tuple[dict[str, Any], str | None]:
    """(fields, content) of one entry: the field list is the run of ``- **`` lines right after
    the heading, else the run that ends the entry (after the content); the rest is content."""
    end = len(lines)
    while end > 1 and (not lines[end - 1].strip() or lines[end - 1].strip() in _RULES):
        end -= 1  # trailing blank lines and a closing rule
    first = 1
    while first < end and not lines[first].strip():
        first += 1
    stop = first
    while stop < end and _FIELDISH.match(lines[stop]):
        stop += 1
    if stop > first:  # the field list first, the content after it
        return _fields(lines, first, stop, start), _content(lines[stop:end])
    begin = end
    while begin > first and _FIELDISH.match(lines[begin - 1]):
        begin -= 1
    if begin < end and begin > first and not lines[begin - 1].strip():  # the content, then the list
        return _fields(lines, begin, end, start), _content(lines[first:begin])
    return {}, _content(lines[first:end])


def _fields(lines: list[str], first: int, stop: int, start: int) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for i in range(first, stop):
        line = lines[i]
        match = _FIELD.fullmatch(line)
        if match is None:
            raise Rejected(
                RejectReason.BAD_VALUE,
                f"line {start + i}: {line[:80]!r} is not a field line '- **name:** value'",
            )
        name = (match.group(1) or match.group(2)).lower()
        if name in ("id", "content"):
            raise Rejected(
                RejectReason.BAD_VALUE, f"line {start + i}: field {name} belongs in the heading or the body"
            )
        if name in fields:
            raise Rejected(RejectReason.BAD_VALUE, f"line {start + i}: field {name} is given twice")
        value = _unquote(match.group(3))
        fields[name] = None if value in _NULLS else value
    return fields


def _content(body: list[str]) -> str | None:
    content = "\n".join(body).strip("\n")
    return content if content.strip() else None


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == "`":
        return value[1:-1].strip()
    return value


CONNECTOR = Connector(
    name=NAME,
    version=VERSION,
    description="Memsolus exports: JSON (array or {memories}), JSON Lines, CSV by header name, Markdown.",
    scope_fields=("user_id", "agent_id", "session_id"),
    default_scope_template="user:{user_id}",
    formats=("json", "jsonl", "csv", "markdown"),
    read_fn=read,
)
