"""Selection: which rows an export request names, as DuckDB SQL with bound parameters.

Reads the store's live Parquet files (those the live import manifests name; the store, not the
catalog, is the system of record, so an export never sees a stale catalog). The current version
of each episode (per ``IDENTITY``: tenant, system, source id) is the one the catalog's
``episodes`` view picks (``CURRENT_ORDER``); with ``as_of`` it is the one ``episodes_as_of``
picks. Filters apply to that version, so a filter can never reach an older version of an episode
that has since moved out of it.

Instead of a window over every column (which would hold the whole export in memory), the
versions to drop are found first from a narrow scan (the identity and the ordering columns of
the episodes that have more than one version) and anti-joined by file and row number; when no
episode has two versions — the common case — the rows stream straight from the files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import duckdb

from connectors.kit.sql import quote_list
from connectors.schema import EPISODE_SCHEMA
from pipelines.exports.request import ALL_TENANTS, EPOCH, ExportFilters
from pipelines.store.episodes import CURRENT_ORDER, IDENTITY, EpisodeStore, typed_empty

#: The view every export query reads from: the live files, with file name and row number.
SOURCE = "export_src"

_AS_OF = """coalesce(valid_from <= $as_of, true)
  AND coalesce(valid_to > $as_of, true)
  AND coalesce(recorded_at, created_at, observed_at) <= $as_of
  AND coalesce(superseded_at > $as_of, status = 'active')"""


@dataclass(frozen=True)
class Selection:
    """``FROM … WHERE …`` over :data:`SOURCE` aliased ``v``, and its positional parameters."""

    from_where: str
    params: list[Any]


def live_files(store: EpisodeStore) -> list[str]:
    return [store.location.uri(f["path"]) for m in store.live_manifests() for f in m["files"]["episodes"]]


def create_source(con: duckdb.DuckDBPyConnection, store: EpisodeStore) -> None:
    """The view :data:`SOURCE` over the store's live episode files (typed and empty if none)."""
    store.location.register_with(con)
    files = live_files(store)
    if files:
        # hive_partitioning off: DuckDB would otherwise replace the source_system column with the
        # partition folder's value (source_system=memport for re-imported exports) and add `dump`
        con.execute(
            f"CREATE TEMP VIEW {SOURCE} AS SELECT * FROM "
            f"read_parquet({quote_list(files)}, filename = true, file_row_number = true, "
            "hive_partitioning = false)"
        )
        return
    con.register("export_empty", typed_empty(EPISODE_SCHEMA))
    con.execute(
        f"CREATE TEMP TABLE {SOURCE} AS SELECT *, ''::VARCHAR AS filename, "
        "0::BIGINT AS file_row_number FROM export_empty"
    )
    con.unregister("export_empty")


def _as_of_sql(filters: ExportFilters, params: list[Any]) -> str:
    if filters.as_of is None:
        return "true"
    params.extend([filters.as_of] * 4)
    return "(" + _AS_OF.replace("$as_of", "?::TIMESTAMPTZ") + ")"


def _drop_older_versions(con: duckdb.DuckDBPyConnection, filters: ExportFilters) -> bool:
    """Fill temp table ``export_older`` with (filename, file_row_number) of non-current versions."""
    params: list[Any] = []
    as_of = _as_of_sql(filters, params)
    params_twice = params + params
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE export_older AS
        SELECT filename, file_row_number FROM {SOURCE}
        SEMI JOIN (SELECT {IDENTITY} FROM {SOURCE} WHERE {as_of}
                   GROUP BY ALL HAVING count(*) > 1) USING ({IDENTITY})
        WHERE {as_of}
        QUALIFY row_number() OVER (PARTITION BY {IDENTITY} ORDER BY {CURRENT_ORDER}) > 1
        """,
        params_twice,
    )
    (n,) = con.execute("SELECT count(*) FROM export_older").fetchall()[0]
    return bool(n)


def _metadata_clause(key: str, value: Any, params: list[Any]) -> str:
    """Top-level key containment, as Postgres' ``metadata @> {key: value}`` at the top level."""
    path = '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        params.extend([path, "true" if value else "false"])
        return "json_extract(v.metadata, ?)::VARCHAR = ?"
    if isinstance(value, int | float):
        params.extend([path, path, float(value)])
        return (
            "json_type(v.metadata, ?) IN ('BIGINT', 'UBIGINT', 'DOUBLE') "
            "AND json_extract(v.metadata, ?)::DOUBLE = ?"
        )
    if isinstance(value, str):
        params.extend([path, path, value])
        return "json_type(v.metadata, ?) = 'VARCHAR' AND json_extract_string(v.metadata, ?) = ?"
    # objects and arrays: containment within that key's value (json_contains recurses, which is
    # Postgres' @> for nested values; the top-level key itself is fixed by the path)
    params.extend([path, json.dumps(value)])
    return "coalesce(json_contains(json_extract(v.metadata, ?), ?), false)"


def select(con: duckdb.DuckDBPyConnection, filters: ExportFilters) -> Selection:
    """The rows of the request, after :func:`create_source` on ``con``."""
    older = _drop_older_versions(con, filters)
    params: list[Any] = []
    where = [_as_of_sql(filters, params)]
    if filters.as_of is None:  # as-of decides validity itself, from the version's own times
        statuses = ["active"]
        statuses += ["superseded"] if filters.include_superseded else []
        statuses += ["deleted"] if filters.include_deleted else []
        where.append("list_contains(?::VARCHAR[], v.status)")
        params.append(statuses)
    if filters.tenant_id != ALL_TENANTS:
        where.append("v.tenant_id = ?")
        params.append(filters.tenant_id)
    if filters.scope is not None:
        where.append("(v.scope = ? OR starts_with(v.scope, ?))")
        params += [filters.scope, filters.scope + "/"]
    for column in ("namespace", "source_system", "user_id", "agent_id", "session_id", "priority"):
        value = getattr(filters, column)
        if value is not None:
            where.append(f"v.{column} = ?")
            params.append(value)
    if filters.types:
        where.append("list_contains(?::VARCHAR[], v.type)")
        params.append(list(filters.types))
    if filters.categories:
        where.append("list_has_any(v.categories, ?::VARCHAR[])")
        params.append(list(filters.categories))
    if filters.tags:
        where.append("list_has_all(v.tags, ?::VARCHAR[])")
        params.append(list(filters.tags))
    for key, value in filters.metadata.items():
        where.append(_metadata_clause(key, value, params))
    created = "coalesce(v.created_at, v.observed_at)"
    if filters.created_after is not None:
        where.append(f"{created} >= ?::TIMESTAMPTZ")
        params.append(filters.created_after)
    if filters.created_before is not None:
        where.append(f"{created} <= ?::TIMESTAMPTZ")
        params.append(filters.created_before)
    if filters.observed_start_us is not None:
        where.append("v.observed_at >= ?::TIMESTAMPTZ")
        params.append(EPOCH + timedelta(microseconds=filters.observed_start_us))
    if filters.observed_end_us is not None:
        where.append("v.observed_at <= ?::TIMESTAMPTZ")
        params.append(EPOCH + timedelta(microseconds=filters.observed_end_us))
    join = " ANTI JOIN export_older o USING (filename, file_row_number)" if older else ""
    return Selection(f"FROM {SOURCE} v{join} WHERE " + "\n  AND ".join(where), params)
