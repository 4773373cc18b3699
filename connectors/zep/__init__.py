"""Zep Cloud (v2, v3, v4), legacy Zep CE and Graphiti (PEER_FORMATS.md §2): API pages dumped to files.

Zep has no export file; a dump is what a script saved while paging through the API, one kind of
object per file. Accepted containers: a bare JSON array, an API page envelope (``{"edges"|
"episodes"|"messages"|"users"|"sessions"|"threads"|"groups"|"graphs"|"nodes"|"facts"|
"relevant_facts": [...], "total_count", "row_count"...}``; several lists in one object, as in a
search result, are read in document order), the v4 pager ``{"items": [...], "next_cursor"}``, one
record saved alone, and JSON Lines of records. The kind and the API generation come from the
content, never the file name: the envelope's list key, else each record's keys (``fact`` → a fact;
``content`` → an episode or a message; ``uuid`` with user, thread or graph fields → a directory
record). Scalar ids on the envelope (``user_id`` on a v3 ``thread.get`` page, or ``thread_id``,
``graph_id``… a script put there) fill the records that lack them. Timestamps are ISO 8601 / RFC
3339 (Go RFC3339Nano with 7-9 fractional digits is cut to microseconds); Go's zero time
``0001-01-01T00:00:00Z``, what Zep writes for an unset time, is null (so ``observed_at`` falls
back as for a missing time, and an unset ``expired_at`` is no supersession); numbers are rejected,
Zep never writes them. Embedding vectors (``fact_embedding``, ``name_embedding``…) are dropped.

Mapping (``source_id`` = ``uuid`` throughout; the source ``metadata`` object, or Graphiti
``episode_metadata``, becomes the canonical metadata and every other field is kept under
``_source``):

* Graph edges / facts (v2/v3 ``EntityEdge``, v4 ``Edge``, Graphiti ``EntityEdge`` and REST
  ``FactResult``) → ``observation``, content = ``fact``, key ``zep-edge:<uuid>``; the relation
  ``name`` (``WORKS_AT``) is the category. Bi-temporal: ``valid_at`` → ``valid_from``,
  ``invalid_at`` → ``valid_to``, ``created_at`` → ``recorded_at`` and ``created_at``,
  ``expired_at`` → ``superseded_at``; null bounds stay null (``valid_from`` is never derived from
  ``created_at``). ``observed_at`` = Graphiti ``reference_time``, else ``created_at``. Status is
  ``superseded`` when ``expired_at`` is set (Zep's "no longer the current belief"), else
  ``active``: a past ``invalid_at`` alone says the fact *was* true until then, which is a current
  belief about the past, and a status that moved with the clock would make imports irreproducible.
* Legacy CE facts ``{uuid, fact, created_at, rating}`` → ``observation``, key ``zep-fact:<uuid>``.
* Thread / session messages → ``message``, key ``zep-message:<uuid>``. Role rule of §2.4: when
  ``role_type`` is present (v2, CE) it is the role and ``role`` the speaker; otherwise ``role`` is
  the role and ``name`` the speaker. The speaker is the ``author``; ``function`` → ``tool``,
  ``norole`` → no role. ``observed_at`` = v4 ``reference_time``, else ``created_at``.
* Graph episodes by ``source``: ``message`` → ``message``; ``text``, ``json`` or an unknown
  source → ``document``; ``fact_triple`` → ``observation``; no ``source`` → ``message`` if it has
  a role, else ``document``. Message episodes take the role as above (v4 speaker ``role_name``) and
  the key ``zep-message:<uuid>``: Zep stores each thread message as a message episode under the
  message's uuid, so a messages dump and an episodes dump give one episode, not two. Others are
  ``zep-episode:<uuid>``. ``source_description`` → ``source``. ``observed_at`` =
  ``reference_time`` (v4), else Graphiti ``valid_at`` (an episode's ``valid_at`` is the document
  time, not a validity bound), else ``created_at``.
* Users, sessions / threads, groups / graphs and entity nodes are not imported: they are
  directory records (ids, names, e-mail, counters) whose identity every episode already carries,
  and an episode would need invented text. Each is a ``not_memory`` skip reject that keeps the
  record.

Ids: ``user_id`` (v2/v3 developer id; v4 falls back to ``user_uuid``), ``session_id`` from
``session_id`` / ``thread_id`` / ``thread_uuid``; graph ids stay in metadata. Scope placeholders:
``user_id``, ``user_uuid``, ``session_id``, ``graph_id`` (= ``graph_id``, ``group_id`` or
``graph_uuid``), ``group_id`` (the same) and ``owner``: ``user:<user_id or user_uuid>``, else
``graph:<graph_id>``, the default template. A page with no owner at all (a v2 ``edge
get_by_user_id`` list) needs a fixed template such as ``org:acme/user:priya``. A v2
``MessageListResponse`` page (``messages``, ``row_count``, ``total_count``) carries no session
or user id at all: saved per session (``…/sessions/<session_id>/page-1.json``), the path says
them, through a ``MEMPORT_SCOPE_TEMPLATES`` glob with named parts, e.g.
``{"zep/users/{user_id}/sessions/{session_id}/*.json": "user:{user_id}/session:{session_id}"}``:
the captured values fill the placeholders and the ``user_id`` / ``session_id`` of every record
that has none of its own (``connectors.base.ReadOptions.path_fields``).

Rejects besides the shared checks: a record of no Zep kind in a list that does not say
(``unknown_type``), an empty ``fact`` / ``content`` (``missing_field``), a role outside
``norole|system|assistant|user|function|tool`` (``bad_value``). A file whose first 50 records
are all of no Zep kind, or an object with no known list, is not a Zep dump (``DumpFormatError``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from itertools import chain, islice
from typing import Any

from fsspec import AbstractFileSystem

from connectors.base import Batch, Connector, ReadOptions
from connectors.errors import DumpFormatError
from connectors.kit import jsonscan, records, sources
from connectors.kit.records import Rejected
from connectors.schema import RejectReason
from connectors.zep import mapping

NAME = "zep"
VERSION = "1.0.0"
EXPECTED = (
    "Zep / Graphiti API dump (edges, episodes, messages, users or threads: a list, a page or JSON Lines)"
)

#: Envelope list keys and the kind of their records (``None``: decided per record).
_LISTS: dict[str, mapping.Kind | None] = {
    "edges": "edge",
    "facts": "edge",
    "relevant_facts": "edge",
    "episodes": "episode",
    "messages": "message",
    "users": "user",
    "sessions": "thread",
    "threads": "thread",
    "groups": "graph",
    "graphs": "graph",
    "nodes": "node",
    "items": None,
    "results": None,
    "data": None,
}
#: Envelope scalars that fill records lacking them.
_CONTEXT = (
    "user_id",
    "user_uuid",
    "session_id",
    "thread_id",
    "thread_uuid",
    "graph_id",
    "group_id",
    "graph_uuid",
)
_LOOKAHEAD = 50


def read(fs: AbstractFileSystem, path: str, options: ReadOptions) -> Iterator[Batch]:
    uri = fs.unstrip_protocol(path)
    kind = records.sniff(fs, path)
    if kind == "empty":
        return
    if kind != "json":
        raise DumpFormatError(uri, EXPECTED, f"a {kind} file")
    head = sources.peek(fs, path)
    shape, first_keys = head.shape, list(head.first_keys)
    if shape == "lines":
        items = _lines(fs, path)
    elif shape == "array":
        items = _list(fs, path, "item", None, {}, 0)
    elif mapping.classify(dict.fromkeys(first_keys)) in ("edge", "fact", "episode", "message"):
        items = _single(fs, path)
    else:
        items = _envelope(fs, path, uri)
    first = list(islice(items, _LOOKAHEAD))
    objects = [item for item in first if isinstance(item[2], dict)]
    if objects and not any(hint or mapping.classify(value) for _, _, value, hint, _ in objects):
        keys = ", ".join(list(objects[0][2])[:8]) or "no keys"
        raise DumpFormatError(uri, EXPECTED, f"records with keys: {keys}")
    rows = (mapping.row(*item) for item in chain(first, items))
    yield from records.run(NAME, rows, fs, path, options)


# --- reading: every source yields (pos, raw, value | Rejected, kind hint, envelope context) ------


Item = tuple[int, str | None, Any, mapping.Kind | None, Mapping[str, str]]


def _raw(value: Any) -> str | None:
    try:
        return records.dumps(value)
    except RecursionError:
        return None


def _list(
    fs: AbstractFileSystem,
    path: str,
    prefix: str,
    hint: mapping.Kind | None,
    ctx: Mapping[str, str],
    start: int,
) -> Iterator[Item]:
    with fs.open(path, "rb") as f:
        try:
            for pos, value in records.json_items(f, prefix):
                yield start + pos, None if isinstance(value, Rejected) else _raw(value), value, hint, ctx
        except records.Malformed as exc:
            broken = exc.rejected(f"document breaks off or turns invalid {exc}")
            yield start + exc.pos, None, broken, hint, ctx


def _lines(fs: AbstractFileSystem, path: str) -> Iterator[Item]:
    for frame in sources.iter_json_lines(fs, path, batch_rows=10_000):
        for pos, raw, reason, detail in frame.iter_rows():
            if reason is not None:
                yield pos, raw, Rejected(RejectReason(reason), detail), None, {}
                continue
            try:
                value = json.loads(raw)
            except RecursionError:
                value = Rejected(RejectReason.TOO_DEEP, f"line nests deeper than {records.MAX_DEPTH} levels")
            except ValueError as exc:
                value = Rejected(RejectReason.INVALID_JSON, f"line is not valid JSON: {exc}")
            yield pos, raw, value, None, {}


def _single(fs: AbstractFileSystem, path: str) -> Iterator[Item]:
    """One record saved alone (``graph.edge.get``, ``graph.episode.get``)."""
    try:
        value = records.load_document(fs, path, expected=EXPECTED)
    except Rejected as exc:
        yield 0, None, exc, None, {}
        return
    yield 0, _raw(value), value, None, {}


def _envelope(fs: AbstractFileSystem, path: str, uri: str) -> Iterator[Item]:
    """An API page: its record lists in document order, with its scalar ids as context."""
    keys, lists, ctx = _scan_envelope(fs, path)
    known = [key for key in lists if key in _LISTS]
    if not known:
        raise DumpFormatError(uri, EXPECTED, f"a JSON object with keys: {', '.join(keys[:8]) or 'no keys'}")
    pos = 0
    for key in known:
        for item in _list(fs, path, f"{key}.item", _LISTS[key], ctx, pos):
            yield item
            pos = item[0] + 1
            if isinstance(item[2], Rejected) and item[2].unread is not None:
                return


def _scan_envelope(fs: AbstractFileSystem, path: str) -> tuple[list[str], list[str], dict[str, str]]:
    """Top-level keys, the keys holding lists, and the id scalars, in one streaming pass."""
    keys: list[str] = []
    lists: list[str] = []
    ctx: dict[str, str] = {}
    with fs.open(path, "rb") as f:  # walked without building values: depth costs nothing
        for key, value in jsonscan.members(f):
            keys.append(key)
            if value is jsonscan.ARRAY:
                lists.append(key)
            elif key in _CONTEXT and isinstance(value, str | int | float) and not isinstance(value, bool):
                ctx[key] = str(value)
    return keys, lists, ctx


CONNECTOR = Connector(
    name=NAME,
    version=VERSION,
    description="Zep Cloud v2/v3/v4, CE and Graphiti API pages: bi-temporal edges, episodes, messages.",
    scope_fields=("owner", "user_id", "user_uuid", "session_id", "graph_id", "group_id"),
    default_scope_template="{owner}",
    formats=("json", "jsonl"),
    read_fn=read,
)
