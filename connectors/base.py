"""The connector contract: what every peer-system module in ``connectors/`` provides.

A connector turns one dump file into canonical episodes. It is a plain function over an injected
fsspec filesystem, yielding bounded :class:`Batch` es, so memory stays flat whatever the dump's
size. Every record it reads ends in exactly one place: an accepted episode or a reject with a
reason and its position. (Duplicates are found later, by the store, across the whole dump.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import polars as pl
from fsspec import AbstractFileSystem

from connectors.errors import ConfigError

#: Rows per batch handed from a connector to the store; bounds the connector's working memory.
DEFAULT_BATCH_ROWS = 100_000

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


#: Identity columns a value taken from the dump's path fills where a record has none.
PATH_IDENTITY = ("user_id", "agent_id", "session_id")


@dataclass(frozen=True)
class ReadOptions:
    """Per-import settings. ``scope_template`` is filled per row, e.g. ``org:acme/user:{user_id}``.

    ``path_fields`` are values named in the dump's path (see :func:`path_captures`): they fill
    the template's placeholders of the same name, and the ``user_id``/``agent_id``/``session_id``
    columns, wherever a record has no value of its own (the record's own value wins).
    """

    tenant_id: str
    scope_template: str
    batch_rows: int = DEFAULT_BATCH_ROWS
    path_fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Unread:
    """Bytes of a dump that were not read into records: ``size`` bytes from byte ``offset``,
    why (a reject reason code, e.g. ``truncated_document``) and a detail a person can act on."""

    offset: int
    size: int
    reason: str
    detail: str


@dataclass(frozen=True)
class Batch:
    """A bounded slice of one dump: canonical episodes, rejects, and how many records it read."""

    episodes: pl.DataFrame
    rejects: pl.DataFrame
    read: int
    #: Spans of the dump that could not be read into records: the import reports them, and its
    #: account does not balance.
    unread: tuple[Unread, ...] = ()


ReadFn = Callable[[AbstractFileSystem, str, ReadOptions], Iterator[Batch]]


@dataclass(frozen=True)
class Connector:
    """One peer system: its name (the canonical ``source_system``), version and reader."""

    name: str
    version: str
    description: str
    #: Placeholders a scope template may use with this connector.
    scope_fields: tuple[str, ...]
    default_scope_template: str
    #: Dump formats it reads: ``json`` (documents), ``jsonl``, ``csv``, ``markdown``, ``zip``,
    #: ``sqlite``. The conformance suite runs the format-specific checks from this.
    formats: tuple[str, ...]
    read_fn: ReadFn = field(repr=False)

    def read(
        self,
        fs: AbstractFileSystem,
        path: str,
        *,
        tenant_id: str,
        scope_template: str | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        path_fields: Mapping[str, str] | None = None,
    ) -> Iterator[Batch]:
        """Yield the dump at ``path`` on ``fs`` as canonical batches (``path_fields``: values
        named in the dump's path, see :class:`ReadOptions`)."""
        template = scope_template or self.default_scope_template
        fields = dict(path_fields or {})
        check_scope_template(template, (*self.scope_fields, *fields), system=self.name)
        if not tenant_id:
            raise ConfigError(f"{self.name}: tenant_id is empty; set MEMPORT_TENANT_ID.")
        if batch_rows < 1:
            raise ConfigError(f"{self.name}: batch_rows must be positive, got {batch_rows}.")
        yield from self.read_fn(fs, path, ReadOptions(tenant_id, template, batch_rows, fields))


def scope_placeholders(template: str) -> list[str]:
    return _PLACEHOLDER.findall(template)


def check_scope_template(template: str, available: tuple[str, ...], *, system: str) -> None:
    """Fail before reading anything if the template names a field this system never has."""
    if "{" in _PLACEHOLDER.sub("", template) or "}" in _PLACEHOLDER.sub("", template):
        raise ConfigError(f"{system}: scope template {template!r} has an unbalanced brace.")
    unknown = [p for p in scope_placeholders(template) if p not in available]
    if unknown:
        raise ConfigError(
            f"{system}: scope template {template!r} uses {{{unknown[0]}}}, which {system} dumps "
            f"do not have. Available placeholders: {', '.join(available)}."
        )


_CAPTURE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def path_captures(pattern: str, relpath: str) -> dict[str, str] | None:
    """The values a glob with named parts takes from a dump's path, or None when it does not match.

    The glob is fnmatch's (``*`` and ``?`` match any characters, ``/`` too; ``[...]`` a set) with
    ``{name}`` for one whole path segment, captured: ``sessions/{session_id}/*.json`` matches
    ``sessions/s-42/page-1.json`` and gives ``{"session_id": "s-42"}``. A name used twice must
    capture the same text both times.
    """
    out = ""
    pos = 0
    names: list[str] = []
    for found in _CAPTURE.finditer(pattern):
        out += _glob_regex(pattern[pos : found.start()])
        name = found.group(1)
        out += f"(?P={name})" if name in names else f"(?P<{name}>[^/]+)"
        names.append(name)
        pos = found.end()
    out += _glob_regex(pattern[pos:])
    matched = re.fullmatch(out, relpath, re.S)
    return None if matched is None else {k: v for k, v in matched.groupdict().items() if v is not None}


def _glob_regex(glob: str) -> str:
    """fnmatch's translation of a glob piece, without its anchors (it is part of a larger one)."""
    out = ""
    i = 0
    while i < len(glob):
        c = glob[i]
        i += 1
        if c == "*":
            out += ".*"
        elif c == "?":
            out += "."
        elif c == "[" and (end := glob.find("]", i + 1 if glob[i : i + 1] in ("!", "]") else i)) != -1:
            body = glob[i:end].replace("\\", "\\\\")
            out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
            i = end + 1
        else:
            out += re.escape(c)
    return out
