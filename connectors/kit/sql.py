"""SQL fragments the connectors share: typed JSON projection and the canonical metadata object.

Canonical ``metadata`` is the source's own metadata object (its keys stay top-level, so export
filters on them work) plus one reserved key, ``_source``, holding every other field of the source
record that no canonical column took. Nothing the source had is dropped; JSON nulls are.

The common case is built by string concatenation from values DuckDB already parsed (no second
parse of the record). A record flagged ``has_unknown`` (keys the connector does not know, see
``sources.RecordShape``) takes the exact path: ``json_merge_patch`` on the raw record. Source
metadata that is not an object, or that uses the reserved ``_source`` key itself, is kept whole
under ``_source.metadata``.

:func:`quote_literal`, :func:`quote_list` and :func:`quote_identifier` are the one way text that
came from a person or a file (a path, a URL, a name, a tenant) enters SQL where DuckDB takes no
bound parameter: ``CREATE VIEW`` bodies, ``COPY … TO`` targets and options, ``read_*`` file
lists. Everywhere else such text is a bound parameter.

:func:`duckdb_connect` is the one way memport opens DuckDB: in UTC, whatever the machine's zone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import duckdb


def duckdb_connect(
    database: str = ":memory:", *, read_only: bool = False, **config: Any
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose session time zone is UTC.

    DuckDB takes the process's local zone (``TZ``) by default, so a naive time cast to
    ``TIMESTAMPTZ`` or a timestamp rendered as text would shift by the machine's offset; memport's
    rule is that naive times are UTC. (``TimeZone`` cannot go in ``config``: it needs the ICU
    extension, which is loaded on first use.)
    """
    con = duckdb.connect(database, read_only=read_only, config=config)
    con.execute("SET TimeZone = 'UTC'")
    return con


#: Go's zero time, what Zep (and other Go servers) write for an unset time: no time at all.
#: ``normalize.finish`` nulls it in every staged column; a projection that derives one time from
#: others (``coalesce(updated, created)``) must skip it first, with :func:`set_time`.
GO_ZERO_TIME = "TIMESTAMPTZ '0001-01-01 00:00:00+00'"


def set_time(expr: str) -> str:
    """``expr`` (a TIMESTAMPTZ) as null when it is Go's zero time."""
    return f"NULLIF({expr}, {GO_ZERO_TIME})"


def _checked(text: str) -> str:
    if "\x00" in text:
        # DuckDB ends a string at NUL in places; no path, URL or name of ours holds one
        raise ValueError(f"text with a NUL character cannot go into SQL: {text[:80]!r}")
    return text


def quote_literal(text: str) -> str:
    """``text`` as a SQL string literal (quotes doubled; nothing else is special in DuckDB's)."""
    return "'" + _checked(text).replace("'", "''") + "'"


def quote_list(texts: Iterable[str]) -> str:
    """A SQL list of string literals, e.g. the file list of ``read_parquet``."""
    return "[" + ", ".join(quote_literal(t) for t in texts) + "]"


def quote_identifier(name: str) -> str:
    """``name`` as a SQL identifier (a table, view or column), double quotes doubled."""
    return '"' + _checked(name).replace('"', '""') + '"'


#: The first CTE of every connector's projection: whether the record is a usable object, and what
#: JSON type it has if not (``r`` is NULL for records that did not parse as objects).
PARSED_CTE = """parsed AS (
  SELECT pos, raw, reason, detail, r, has_unknown,
    reason IS NULL AND r IS NOT NULL AS ok,
    CASE WHEN reason IS NOT NULL THEN NULL
         WHEN r IS NOT NULL THEN 'OBJECT'
         WHEN json_valid(raw) THEN json_type(raw) END AS raw_type
  FROM {src}
)"""

#: Reason a connector's SQL gives a record it cannot judge without the record's text, which the
#: fast path carries only for records with unknown keys: the reader then re-reads from there
#: with the text (see ``sources.SqlRunner.over_array_file``). Never stored.
UNDECIDED = "undecided"


def looks_structured(value: str) -> str:
    """SQL: text read as VARCHAR that may have been a JSON object, array or boolean."""
    return f"(({value})[1] IN ('{{', '[') OR ({value}) IN ('true', 'false'))"


def looks_non_string(value: str) -> str:
    """SQL: like :func:`looks_structured`, or a number."""
    return (
        f"({looks_structured(value)} OR (strlen({value}) < 40 AND TRY_CAST({value} AS DOUBLE) IS NOT NULL))"
    )


def not_a_string(value: str, raw: str, path: str, *, numbers_ok: bool = False) -> str:
    """SQL: a field read as VARCHAR was not a JSON string in the record.

    ``json_transform`` to VARCHAR turns any JSON value into text; a second parse of the record to
    learn the real type is paid only when the text looks like an object, array, number or boolean.
    """
    looks = looks_structured(value) if numbers_ok else looks_non_string(value)
    allowed = "('VARCHAR', 'BIGINT', 'UBIGINT')" if numbers_ok else "('VARCHAR')"
    return f"{looks} AND json_type({raw}, {path}) NOT IN {allowed}"


def json_type_name(json_type: str) -> str:
    """SQL: the JSON type name (``object``, ``number``…, as ``records.json_type`` says it) of a
    DuckDB ``json_type(...)`` result, for reject details."""
    return (
        f"CASE {json_type} WHEN 'VARCHAR' THEN 'string' WHEN 'OBJECT' THEN 'object' "
        "WHEN 'ARRAY' THEN 'array' WHEN 'BOOLEAN' THEN 'boolean' WHEN 'NULL' THEN 'null' "
        f"WHEN NULL THEN 'null' ELSE 'number' END"
    )


def not_a_list(value: str, raw: str, key: str) -> str:
    """SQL: a field read as VARCHAR[] came out NULL because the record holds a non-list there."""
    return (
        f"{value} IS NULL AND contains({raw}, '\"{key}\"') "
        f"AND json_type({raw}, '$.{key}') NOT IN ('NULL', 'ARRAY')"
    )


def metadata_sql(
    *,
    raw: str,
    meta: str,
    alias: str,
    kept: Iterable[str],
    known: Iterable[str],
    derived: Mapping[str, str] | None = None,
) -> str:
    """SQL for canonical metadata.

    ``meta`` is the JSON-typed source metadata; ``kept`` the JSON-typed fields of ``alias`` that go
    to ``_source`` verbatim; ``known`` every top-level key the connector maps or keeps;
    ``derived`` extra ``_source`` keys computed by SQL expressions yielding JSON (or NULL).
    """
    kept = list(kept)
    derived = dict(derived or {})
    known_keys = sorted(set(known) | set(kept))
    fields = [f"""CASE WHEN {alias}."{k}" IS NOT NULL THEN '"{k}":' || {alias}."{k}" END""" for k in kept]
    fields += [f"""'"{k}":' || ({expr})""" for k, expr in derived.items()]
    # The source's metadata object goes top-level, unless it uses our reserved key itself: then
    # it is kept whole under _source.metadata instead, like metadata that is not an object.
    top = f"(json_type({meta}) = 'OBJECT' AND NOT contains({meta}, '\"_source\"'))"
    fields.append(f"""CASE WHEN NOT {top} THEN '"metadata":' || {meta} END""")
    drop = {k: None for k in known_keys if k not in kept}
    drop_all = json.dumps(drop, separators=(",", ":"))
    drop_keep_meta = json.dumps({k: v for k, v in drop.items() if k != "metadata"}, separators=(",", ":"))
    rest = f"json_merge_patch({raw}, CASE WHEN {top} THEN '{drop_all}' ELSE '{drop_keep_meta}' END)"
    for k, expr in derived.items():
        rest = f"json_merge_patch({rest}, json_object('{k}', ({expr})::JSON))"
    return f"""CASE
      WHEN has_unknown
      THEN json_merge_patch(CASE WHEN {top} THEN {meta} ELSE '{{}}' END, json_object('_source', {rest}))
      ELSE '{{"_source":{{' || concat_ws(',', {", ".join(fields)}) || '}}'
        || CASE WHEN {top} AND {meta} <> '{{}}' THEN ',' || substr({meta}, 2) ELSE '}}' END
    END"""
