"""The hand-built store of the export tests: canonical rows from ``fixtures/exports/episodes.json``."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import polars as pl

from connectors.base import Batch
from connectors.schema import EPISODE_SCHEMA, REJECT_SCHEMA
from pipelines.store.episodes import DumpInfo, EpisodeStore
from tests.conftest import FIXTURES, put

EPISODES = json.loads((FIXTURES / "exports" / "episodes.json").read_text(encoding="utf-8"))
CASES = json.loads((FIXTURES / "exports" / "expected_filters.json").read_text(encoding="utf-8"))["cases"]
_TIMES = ("observed_at", "created_at", "updated_at", "valid_from", "valid_to", "recorded_at", "superseded_at")


def canonical_row(spec: dict[str, Any], partition: str, position: int) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(EPISODE_SCHEMA.names())
    row |= {k: v for k, v in spec.items() if k != "key"}
    key = spec["key"]
    row |= {
        "episode_id": f"ep_{key}",
        "idempotency_key": f"test:{key}",
        "source_id": key,
        "status": spec.get("status", "active"),
        "categories": spec.get("categories", []),
        "tags": spec.get("tags", []),
        "metadata": spec.get("metadata", "{}"),
        "content_sha256": hashlib.sha256(spec["content"].encode()).hexdigest(),
        "dump_uri": f"memory://landing/{partition}.json",
        "dump_record": position,
        "ingested_at": datetime.fromisoformat("2025-07-01T00:00:00+00:00"),
    }
    for t in _TIMES:
        if isinstance(row[t], str):
            row[t] = datetime.fromisoformat(row[t])
    return row


def build_store(store: EpisodeStore) -> EpisodeStore:
    """One partition per key of episodes.json, committed through the store's own ingest."""
    for partition, specs in EPISODES.items():
        if partition.startswith("_"):
            continue
        rows = [canonical_row(s, partition, i) for i, s in enumerate(specs)]
        frame = pl.DataFrame(rows, schema=EPISODE_SCHEMA)
        dump_path = put(store.location, f"_dumps/{partition}.json", "[]")
        dump = DumpInfo(
            uri=store.location.uri(dump_path),
            source_system="test",
            key=partition,
            connector_version="0",
            tenant_id="acme",
            scope_template="{scope}",
        )
        store.ingest(dump, [Batch(frame, REJECT_SCHEMA.to_frame(), frame.height)], dump_fs=store.location.fs)
    return store
