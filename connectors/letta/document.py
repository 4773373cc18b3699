"""Reading a Letta agent file whole, for the ``letta`` connector: its bytes' SHA-256, the double
encoding, and what can be kept of a document that breaks off.

A ``.af`` is one JSON document (a few MB at most), parsed at once. Its ids (``message-3``) are
local to the file, so the connector needs the SHA-256 of the very bytes it parsed: the file is
read once, hashed and parsed from the same bytes. A document that is cut short or turns invalid
is parsed again event by event (ijson) as far as it goes; the containers still open where it
broke are *unfinished* and the connector imports none of them (one ``malformed_document`` reject
stands for them and for everything after).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

import ijson
from fsspec import AbstractFileSystem

from connectors.kit.records import BOM, MAX_DEPTH, Rejected, read_whole
from connectors.schema import RejectReason

#: An agent file larger than this is not read at once (real ones are a few MB).
MAX_BYTES = 256 << 20
#: Past this nesting a broken document is not rebuilt further (records deeper than
#: ``MAX_DEPTH`` are rejected one by one anyway).
_SALVAGE_DEPTH = 16 * MAX_DEPTH
#: How many trailing characters of a cut double-encoded string are tried away to close it.
_CLOSE_TRIES = 8


@dataclass
class Document:
    """A parsed agent file: the value, the SHA-256 of the file's bytes, and, for a broken one,
    the reject that ends it and the ids of the containers left unfinished."""

    value: Any
    sha256: str
    broken: Rejected | None = None
    unfinished: set[int] = field(default_factory=set)

    def finished(self, node: Any) -> bool:
        return id(node) not in self.unfinished


def read_document(fs: AbstractFileSystem, path: str, *, expected: str) -> Document:
    data = read_whole(fs, path, expected=expected, max_bytes=MAX_BYTES)
    sha = hashlib.sha256(data).hexdigest()
    body = data.removeprefix(BOM)
    try:
        textual = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = Rejected(RejectReason.INVALID_UTF8, f"document is not valid UTF-8 at byte {exc.start}")
        return _salvage(body[: exc.start].decode("utf-8"), sha, problem)
    try:
        value = _loads(textual)
        if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
            textual = value  # Letta's double encoding: a JSON string holding the document
            value = _loads(textual)
    except _Broken as exc:
        if textual.lstrip()[:1] == '"':
            textual = _close_string(textual)
        return _salvage(textual, sha, Rejected(RejectReason.MALFORMED_DOCUMENT, str(exc)))
    except Rejected as exc:
        return Document(None, sha, exc)
    return Document(value, sha)


class _Broken(Exception):
    pass


def _loads(textual: str) -> Any:
    try:
        value = json.loads(textual)
    except RecursionError:
        raise Rejected(RejectReason.TOO_DEEP, "document nests too deep to parse") from None
    except ValueError as exc:
        raise _Broken(f"document is not valid JSON: {exc}") from None
    return value


def _close_string(textual: str) -> str:
    """The text inside a cut double-encoded document, as far as it can be decoded."""
    body = textual.rstrip()
    for cut in range(_CLOSE_TRIES):
        try:
            inner = json.loads(body[: len(body) - cut] + '"')
        except ValueError:
            continue
        if isinstance(inner, str):
            return inner
    return textual


def _salvage(textual: str, sha: str, problem: Rejected) -> Document:
    """Build the document event by event up to where it breaks; note the unfinished containers."""
    stack: list[Any] = []
    keys: list[Any] = []
    root: Any = None

    def add(value: Any) -> None:
        nonlocal root
        if not stack:
            root = value
        elif isinstance(stack[-1], list):
            stack[-1].append(value)
        else:
            stack[-1][keys[-1]] = value

    events = ijson.parse(io.BytesIO(textual.encode("utf-8")), use_float=True)
    try:
        for _prefix, event, value in events:
            if event in ("start_map", "start_array"):
                container: Any = {} if event == "start_map" else []
                add(container)
                stack.append(container)
                keys.append(None)
                if len(stack) > _SALVAGE_DEPTH:
                    break
            elif event in ("end_map", "end_array"):
                stack.pop()
                keys.pop()
            elif event == "map_key":
                keys[-1] = value
            else:
                add(value)
    except (ijson.JSONError, ValueError):
        pass  # the break itself: everything before it is in ``root``
    if isinstance(root, str) and root.lstrip()[:1] in ("{", "["):
        return _salvage(root, sha, problem)
    if stack:
        where = _place(stack, keys) or "the top-level object"
        problem = Rejected(problem.reason, f"{problem.detail}; it breaks off inside {where}")
    return Document(root, sha, problem, {id(c) for c in stack})


def _place(stack: list[Any], keys: list[Any]) -> str:
    """``agents[0].messages[3]``: where the unfinished containers sit."""
    place = ""
    for depth in range(1, len(stack)):
        parent = stack[depth - 1]
        if isinstance(parent, list):
            place += f"[{len(parent) - 1}]"
        else:
            place += ("." if place else "") + str(keys[depth - 1])
    return place
