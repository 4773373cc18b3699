"""The store's imports as one small table: every import manifest, whether it is live, its files.

The current state (``pipelines.store.current``) keeps this table beside its segments, so a refresh
reads only the manifests committed since the last one (a listing tells which), never all of them.
Columns starting with ``_`` are bookkeeping the catalog's ``imports`` view leaves out.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import polars as pl

from pipelines.store.episodes import dump_relpath

IMPORTS_SCHEMA = pl.Schema(
    {
        "ingest_id": pl.String(),
        "live": pl.Boolean(),
        "source_system": pl.String(),
        "dump": pl.String(),
        "dump_uri": pl.String(),
        "dump_sha256": pl.String(),
        "dump_bytes": pl.Int64(),
        "tenant_id": pl.String(),
        "scope_template": pl.String(),
        "connector_version": pl.String(),
        "started_at": pl.Datetime("us", "UTC"),
        "finished_at": pl.Datetime("us", "UTC"),
        "duration_s": pl.Float64(),
        "read": pl.Int64(),
        "accepted": pl.Int64(),
        "rejected": pl.Int64(),
        "duplicate": pl.Int64(),
        "unread_bytes": pl.Int64(),
        "unread_offset": pl.Int64(),
        "unread_reason": pl.String(),
        "rejects_by_reason": pl.String(),
        "episode_files": pl.Int64(),
        "reject_files": pl.Int64(),
        # bookkeeping: where the manifest is (relative to the store), its rule, its files
        "_manifest": pl.String(),
        "_manifest_version": pl.Int64(),
        "_episode_paths": pl.List(pl.String()),
        "_reject_paths": pl.List(pl.String()),
    }
)


def _unread_columns(manifest: dict[str, Any]) -> dict[str, Any]:
    """Bytes of the dump not read into records (0 in a manifest written before they were counted),
    from which offset and why: an import whose account balances read its whole dump."""
    spans = manifest.get("unread") or []
    first = spans[0] if spans else {}
    return {
        "unread_bytes": int(manifest["counts"].get("unread_bytes", 0)),
        "unread_offset": first.get("offset"),
        "unread_reason": "; ".join(f"{s['reason']} at byte {s['offset']:,}: {s['detail']}" for s in spans)
        or None,
    }


def import_row(relpath: str, m: dict[str, Any], root: str) -> dict[str, Any]:
    """One row of the table for the manifest at ``relpath`` (under the store ``root``)."""

    def rel(path: str) -> str:
        return path[len(root) + 1 :] if path.startswith(root + "/") else path

    return {
        "ingest_id": m["ingest_id"],
        "live": False,
        "source_system": m["source_system"],
        "dump": dump_relpath(m["dump_key"]),
        "dump_uri": m["dump_uri"],
        "dump_sha256": m["dump_sha256"],
        "dump_bytes": m["dump_bytes"],
        "tenant_id": m["tenant_id"],
        "scope_template": m["scope_template"],
        "connector_version": m["connector_version"],
        "started_at": datetime.fromisoformat(m["started_at"]),
        "finished_at": datetime.fromisoformat(m["finished_at"]),
        "duration_s": float(m["duration_s"]),
        **{k: int(v) for k, v in m["counts"].items()},
        **_unread_columns(m),
        "rejects_by_reason": json.dumps(m["rejects_by_reason"]),
        "episode_files": len(m["files"]["episodes"]),
        "reject_files": len(m["files"]["rejects"]),
        "_manifest": relpath,
        "_manifest_version": int(m.get("manifest_version", 1)),
        "_episode_paths": [rel(f["path"]) for f in m["files"]["episodes"]],
        "_reject_paths": [rel(f["path"]) for f in m["files"]["rejects"]],
    }


def frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=IMPORTS_SCHEMA).sort("started_at", descending=True)
