"""Reading a Letta agent file whole, for the ``letta`` connector: its bytes' SHA-256, the double
encoding, and what can be kept of a document that breaks off.

A ``.af`` is one JSON document (a few MB at most), parsed at once. Its ids (``message-3``) are
local to the file, so the connector needs the SHA-256 of the very bytes it parsed: the file is
read once, hashed and parsed from the same bytes. A document that is cut short or turns invalid
is parsed again event by event (ijson) as far as it goes; the containers still open where it
broke are *unfinished* and the connector imports none of them (one reject stands for them and for
everything after: ``truncated_document`` when the file ends inside the document,
``malformed_document`` when it turns invalid).

Files are also published broken another way: a document cut off, then a complete document
appended (a save that failed half-way and was retried into the same file), or two complete
documents back to back. :func:`read_documents` then finds every complete document that follows
(a ``{`` opening a line or an agent file's first key, that parses to its end as an agent file),
reads each whole, and salvages each cut one up to where the next begins; the cut one's reject is
``truncated_document`` and names both byte offsets. The documents after the first have their own
id space (``Document.ident``: ``<sha256>/<n>``), as every export numbers from ``message-0``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import ijson
from fsspec import AbstractFileSystem

from connectors.kit import jsonscan
from connectors.kit.records import BOM, MAX_DEPTH, WHOLE_DOCUMENT_BYTES, Rejected, read_whole
from connectors.schema import RejectReason

#: An agent file larger than this is not read (real ones are a few MB; parsed whole, a larger one
#: would outgrow the memory bound).
MAX_BYTES = WHOLE_DOCUMENT_BYTES
#: Past this nesting a broken document is not rebuilt further (records deeper than
#: ``MAX_DEPTH`` are rejected one by one anyway).
_SALVAGE_DEPTH = 16 * MAX_DEPTH
#: How many trailing characters of a cut double-encoded string are tried away to close it.
_CLOSE_TRIES = 8
#: Where a following document may start: a ``{`` at the margin, or one opening an agent file's
#: first key (compact files have no line breaks).
_STARTS = re.compile(r'(?m)^\{|\{(?=\s*"(?:agents|agent_type|core_memory)")')
#: How many such places are tried, and how many times the file's length their parses may cost
#: together (each is a parse to the end of the file at worst).
_MAX_TRIES = 64
_PARSE_BUDGET = 4


@dataclass
class Document:
    """A parsed agent file: the value, the SHA-256 of the file's bytes, and, for a broken one,
    the reject that ends it and the ids of the containers left unfinished."""

    value: Any
    sha256: str
    broken: Rejected | None = None
    unfinished: set[int] = field(default_factory=set)
    #: Its place among the documents of the file (0 for the first, the usual only one).
    index: int = 0

    def finished(self, node: Any) -> bool:
        return id(node) not in self.unfinished

    @property
    def ident(self) -> str:
        """What its records' keys start with: the file's SHA-256, and the document's number after
        the first (ids such as ``message-3`` repeat in every document)."""
        return self.sha256 if self.index == 0 else f"{self.sha256}/{self.index}"


def read_documents(fs: AbstractFileSystem, path: str, *, expected: str) -> list[Document]:
    """The document(s) of an agent file: one, or every one of a file broken as published."""
    data = read_whole(fs, path, expected=expected, max_bytes=MAX_BYTES)
    sha = hashlib.sha256(data).hexdigest()
    body = data.removeprefix(BOM)
    try:
        textual = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = Rejected(RejectReason.INVALID_UTF8, f"document is not valid UTF-8 at byte {exc.start}")
        return [_salvage(body[: exc.start].decode("utf-8"), sha, problem)]
    try:
        value = _loads(textual)
        if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
            textual = value  # Letta's double encoding: a JSON string holding the document
            value = _loads(textual)
    except _Broken as exc:
        if textual.lstrip()[:1] == '"':
            textual = _close_string(textual)
        elif (several := _documents(textual, sha, len(data) - len(body))) is not None:
            return several
        reason = RejectReason.TRUNCATED_DOCUMENT if exc.at_end else RejectReason.MALFORMED_DOCUMENT
        return [_salvage(textual, sha, Rejected(reason, str(exc)))]
    except Rejected as exc:
        return [Document(None, sha, exc)]
    return [Document(value, sha)]


class _Broken(Exception):
    def __init__(self, detail: str, *, at_end: bool) -> None:
        super().__init__(detail)
        self.at_end = at_end


def _loads(textual: str) -> Any:
    try:
        value = json.loads(textual)
    except RecursionError:
        raise Rejected(RejectReason.TOO_DEEP, "document nests too deep to parse") from None
    except json.JSONDecodeError as exc:
        at_end = _ends_inside(textual)
        detail = "the document ends before it is complete (the file is cut short)" if at_end else ""
        raise _Broken(detail or f"document is not valid JSON: {exc}", at_end=at_end) from None
    return value


def _ends_inside(textual: str) -> bool:
    """Whether the file ends inside its document (cut short) rather than turning invalid: the
    byte-level splitter walks the structure and says which."""
    walker = jsonscan.Splitter(io.BytesIO(textual.encode("utf-8")), "", skip_bom=False)
    for _ in walker:
        pass
    return walker.unread is not None and walker.unread.reason == RejectReason.TRUNCATED_DOCUMENT.value


def _is_agent_file(value: Any) -> bool:
    return isinstance(value, dict) and ("agents" in value or "core_memory" in value or "messages" in value)


def _decode_at(textual: str, start: int) -> tuple[Any, int] | None:
    try:
        return json.JSONDecoder().raw_decode(textual, start)
    except (ValueError, RecursionError):
        return None


def _documents(textual: str, sha: str, bom: int) -> list[Document] | None:
    """Every document of a file that holds more than one (each cut one salvaged up to where the
    next begins), or None when no complete agent file follows the first document."""
    spans: list[tuple[int, int, Any]] = []  # (start, end, value or None when cut)
    at = len(textual) - len(textual.lstrip())
    tries = 0
    budget = _PARSE_BUDGET * len(textual)
    while at < len(textual):
        whole = _decode_at(textual, at)
        if whole is not None:
            spans.append((at, whole[1], whole[0]))
            end = whole[1]
            at = end + len(textual[end:]) - len(textual[end:].lstrip())
            continue
        following = None
        for found in _STARTS.finditer(textual, at + 1):
            tries += 1
            budget -= len(textual) - found.start()
            if tries > _MAX_TRIES or budget < 0:
                break
            if _is_agent_file((decoded := _decode_at(textual, found.start())) and decoded[0]):
                following = found.start()
                break
        spans.append((at, following or len(textual), None))
        if following is None:
            break
        at = following
    if len(spans) < 2:
        return None

    def byte(i: int) -> int:
        return bom + len(textual[:i].encode("utf-8"))

    docs = []
    for n, (start, end, value) in enumerate(spans):
        if value is not None:
            docs.append(Document(value, sha, index=n))
            continue
        if end < len(textual):
            cut = start + len(textual[start:end].rstrip())
            detail = (
                f"document {n + 1} of {len(spans)} is cut off at byte {byte(cut):,}; "
                f"a complete document follows at byte {byte(end):,}"
            )
        else:
            detail = (
                f"document {n + 1} of {len(spans)} (from byte {byte(start):,}) is cut off by the file's end"
            )
        doc = _salvage(textual[start:end], sha, Rejected(RejectReason.TRUNCATED_DOCUMENT, detail))
        doc.index = n
        docs.append(doc)
    return docs


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
