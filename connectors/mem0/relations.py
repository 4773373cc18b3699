"""Mem0 graph relations (PEER_FORMATS.md §1.2): the ``relations`` list beside ``results`` in a v1.1
``get_all`` / search envelope, each ``{source, source_type?, relationship, target, target_type?,
score?}`` (OSS graph search says ``destination`` for ``target``).

A relation is one ``observation``: content ``"<source> — <relationship> — <target>"``, every field
of the item kept under ``metadata._source``. Relations carry no user: Mem0 builds them from the
same filter as the results (the graph is kept per ``user_id``), so a relation takes each identity
field (``user_id``, ``agent_id``, ``run_id``/``session_id``, ``app_id``) that *every* accepted
result of the dump shares, and none that the results disagree on or leave empty
(``_source.identity_from`` = ``"results"`` when it took any). ``source_id`` is
``relation:<sha256 of the identity and the triple>``: the same relation in another dump of the
same graph is the same episode, the same triple in another user's graph is not. Relations have no
time of their own: ``observed_at`` is the latest time of the dump's results (the graph was read
no earlier), else the dump file's modification time, noted in ``_source.observed_at_from``.

Items are cut out of the document by ``jsonscan.Splitter`` (a second walk of the file, after the
results, taken only when the bytes ``"relations"`` occur in it; only then are the results folded
into :class:`Shared`): one too large, too deep or not
UTF-8 is one reject. Where the document itself breaks,
the results' walk has already reported it (one reject, and the unread bytes from where that walk
stopped: the start of the ``relations`` value, a conservative count): this walk keeps the
relations before the break and adds nothing for it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl
from fsspec import AbstractFileSystem

from connectors.kit import records
from connectors.kit.jsonscan import Splitter
from connectors.kit.records import Rejected, Row
from connectors.mem0 import backup
from connectors.schema import RejectReason

PREFIX = "relations.item"
_IDENTITY = ("user_id", "agent_id", "session_id", "app_id")
#: An identity field the results disagree on.
_MIXED = object()


@dataclass
class Shared:
    """The identity every accepted result of a dump shares, and the latest time among them."""

    values: dict[str, Any] = field(default_factory=dict)
    latest: datetime | None = None

    def add(self, episodes: pl.DataFrame) -> None:
        """Fold in one batch of accepted results."""
        if episodes.is_empty():
            return
        frame = episodes.select(
            "user_id",
            "agent_id",
            "session_id",
            pl.col("metadata").str.json_path_match("$._source.app_id").alias("app_id"),
            pl.coalesce("updated_at", "created_at", "observed_at").alias("t"),
        )
        for name in _IDENTITY:
            seen = set(frame[name].unique().to_list())
            if name in self.values:
                seen.add(self.values[name])
            self.values[name] = seen.pop() if len(seen) == 1 else _MIXED
        t = frame["t"].max()
        if isinstance(t, datetime) and (self.latest is None or t > self.latest):
            self.latest = t

    def get(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if isinstance(value, str) else None


_KEY = b'"relations"'
_CHUNK = 8 << 20


def mentioned(fs: AbstractFileSystem, path: str) -> bool:
    """Whether the file holds the text ``"relations"`` anywhere: a byte search (fast, bounded
    memory) that spares the second walk for the envelopes that have none."""
    tail = b""
    with fs.open(path, "rb") as f:
        while block := f.read(_CHUNK):
            if _KEY in tail + block[: len(_KEY)] or _KEY in block:
                return True
            tail = block[-len(_KEY) :]
    return False


def rows(fs: AbstractFileSystem, path: str, shared: Shared, *, start: int) -> Iterator[Row]:
    """The relations of the envelope at ``path``, positions from ``start`` (after the results);
    for a file that :func:`mentioned` them (the caller asks first: only then does it fold the
    results into ``shared``)."""
    when, origin = shared.latest, "latest time of the results"
    if when is None:
        when, origin = backup.modified_time(fs, path), "dump file modified time"
    with fs.open(path, "rb") as f:
        for item in Splitter(f, PREFIX):
            pos = start + item.pos
            if item.reason is not None or item.data is None:
                detail = f"relation {item.pos}: {item.detail}"
                yield records.reject(pos, None, item.reason or RejectReason.MALFORMED_DOCUMENT, detail)
                continue
            yield _row(pos, item.pos, item.data, shared, when, origin)


def _row(pos: int, n: int, data: bytes, shared: Shared, when: datetime | None, origin: str) -> Row:
    raw = data.decode("utf-8", "backslashreplace")
    try:
        try:
            item = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise Rejected(RejectReason.INVALID_UTF8, f"not valid UTF-8 at byte {exc.start}") from None
        except ValueError:
            raise Rejected(RejectReason.INVALID_JSON, "not valid JSON") from None
        item = records.record_object(item, "relation")
        source = records.text(item, "source", required=True)
        relationship = records.text(item, "relationship", required=True)
        target_key = "target" if "target" in item or "destination" not in item else "destination"
        target = records.text(item, target_key, required=True)
    except Rejected as exc:
        return records.reject(pos, raw, exc.reason, f"relation {n}: {exc.detail}")
    identity = {name: shared.get(name) for name in _IDENTITY}
    digest = hashlib.sha256(
        records.dumps([identity[name] for name in _IDENTITY] + [source, relationship, target]).encode()
    ).hexdigest()
    rest = dict(item)
    if any(identity.values()):
        rest["identity_from"] = "results"
    rest["observed_at_from"] = origin if when is not None else None
    session = identity["session_id"]
    return {
        "pos": pos,
        "raw": raw,
        "idempotency_key": f"mem0-relation:{digest}",
        "source_id": f"relation:{digest}",
        "type": "observation",
        "content": f"{source} — {relationship} — {target}",
        "user_id": identity["user_id"],
        "agent_id": identity["agent_id"],
        "session_id": session,
        "status": "active",
        "metadata": records.metadata(None, rest),
        "observed_at": when,
        "scope_user_id": identity["user_id"],
        "scope_agent_id": identity["agent_id"],
        "scope_app_id": identity["app_id"],
        "scope_session_id": session,
        "scope_run_id": session,
    }
