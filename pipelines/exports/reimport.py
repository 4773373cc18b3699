"""Re-import: a memport export (json, ndjson or csv, any compression, any parts) back into a store.

The canonical formats carry every column of the episode, lineage included, so reading one back
gives the same rows (``metadata`` as compact JSON text: the JSON formats drop its whitespace).
Each file becomes one partition of the target store (``source_system=memport``), committed by an
import manifest as any ingest is. CortexDB-profile exports re-import through the CortexDB
connector instead (they are CortexDB import envelopes); Mnueron CSV and Markdown are one-way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import polars as pl

from connectors.base import Batch
from connectors.errors import ConfigError
from connectors.kit.sql import duckdb_connect, quote_literal
from connectors.schema import EPISODE_SCHEMA, REJECT_SCHEMA
from pipelines.exports.formats import CSV_HEADER, LIST_COLUMNS, NUMBER_COLUMNS, TIMESTAMP_COLUMNS
from pipelines.store.episodes import DumpInfo, EpisodeStore, ImportResult, dump_key
from pipelines.store.locations import Location

SYSTEM = "memport"
VERSION = "1.0.0"
BATCH_ROWS = 50_000


def _reader(fmt: str, uri: str) -> str:
    quoted = quote_literal(uri)
    if fmt == "csv":
        cols = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in CSV_HEADER) + "}"
        return (
            f"read_csv({quoted}, header = true, columns = {cols}, quote = '\"', escape = '\"', "
            "allow_quoted_nulls = false, auto_detect = false)"
        )
    types = {c: "VARCHAR" for c in CSV_HEADER} | {c: "VARCHAR[]" for c in LIST_COLUMNS} | {"metadata": "JSON"}
    types |= {c: "BIGINT" for c in NUMBER_COLUMNS}
    cols = "{" + ", ".join(f"'{c}': '{t}'" for c, t in types.items()) + "}"
    layout = "array" if fmt == "json" else "newline_delimited"
    return f"read_json({quoted}, format = '{layout}', columns = {cols})"


def _columns(fmt: str, neutralized: bool) -> str:
    out = []
    for c in CSV_HEADER:
        if c in TIMESTAMP_COLUMNS:
            expr = f"{c}::TIMESTAMPTZ"
        elif c in LIST_COLUMNS:
            expr = f"{c}::JSON::VARCHAR[]" if fmt == "csv" else c
        elif c in NUMBER_COLUMNS:
            expr = f"{c}::BIGINT"
        elif c == "metadata":
            expr = c if fmt == "csv" else f"{c}::VARCHAR"
        elif fmt == "csv" and neutralized:
            expr = f"CASE WHEN left({c}, 1) = '''' THEN {c}[2:] ELSE {c} END"
        else:
            expr = c
        out.append(f"{expr} AS {c}")
    return ", ".join(out)


def read_export(location: Location, path: str, fmt: str, *, neutralized: bool = True) -> Iterator[Batch]:
    """Canonical batches from one export file (``fmt``: json, ndjson or csv)."""
    if fmt not in ("json", "ndjson", "csv"):
        raise ConfigError(f"{fmt} exports cannot be re-imported by memport (json, ndjson, csv can)")
    with duckdb_connect(memory_limit="256MB") as con:
        con.execute("SET TimeZone = 'UTC'")
        location.register_with(con)
        sql = f"SELECT {_columns(fmt, neutralized)} FROM {_reader(fmt, location.uri(path))}"
        for batch in con.sql(sql).to_arrow_reader(BATCH_ROWS):
            frame = pl.DataFrame(pl.from_arrow(batch)).cast(EPISODE_SCHEMA)
            yield Batch(frame, REJECT_SCHEMA.to_frame(), frame.height)


def import_export(store: EpisodeStore, manifest: dict[str, Any]) -> list[ImportResult]:
    """Import every file of a READY export (its manifest) into ``store``; one partition per file."""
    if manifest.get("profile"):
        raise ConfigError(f"{manifest['profile']} profile exports re-import through their peer's connector")
    dest = Location.from_url(manifest["destination"])
    results = []
    for f in manifest["files"]:
        path = dest.path(f["name"])
        dump = DumpInfo(
            uri=dest.uri(path),
            source_system=SYSTEM,
            key=dump_key(f"{manifest['id']}/{f['name']}"),
            connector_version=VERSION,
            tenant_id=manifest["filters"]["tenant_id"],
            scope_template="{scope}",
        )
        batches = read_export(
            dest, path, manifest["format"], neutralized=bool(manifest.get("neutralize_formulas"))
        )
        results.append(store.ingest(dump, batches, dump_fs=dest.fs))
    return results
