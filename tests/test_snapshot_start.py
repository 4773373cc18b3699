"""The daily snapshot partitions start where the store's history starts (issue 13, §5), not at a
fixed date hundreds of "missing" days ago; MEMPORT_SNAPSHOT_START pins the start."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from connectors.errors import ConfigError
from pipelines.orchestration.backups import build_snapshots, first_import_day, snapshot_start
from pipelines.orchestration.definitions import build_definitions
from pipelines.store.episodes import EpisodeStore, new_ingest_id
from pipelines.store.locations import Location
from tests.conftest import put
from tests.test_store import ingest, mem0_dump

TODAY = datetime.now(UTC).date().isoformat()


def _first_partition(defs: dg.Definitions) -> str:
    spec = next(s for s in defs.resolve_all_asset_specs() if s.key.path == ["store_snapshot"])
    assert spec.partitions_def is not None
    return spec.partitions_def.get_first_partition_key()  # type: ignore[return-value]


def _backdated_manifest(store: EpisodeStore, when: datetime) -> None:
    """An import manifest named as one started at ``when`` (its name is what the start reads)."""
    path = store.manifest_path("mem0", "old.json", new_ingest_id(when))
    put(store.location, path[len(store.location.path("")) :].lstrip("/"), "{}")


def test_partitions_start_at_the_stores_first_import(
    backend: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = EpisodeStore.from_url(f"{backend}/store")
    monkeypatch.setenv("MEMPORT_STORE_URL", store.location.url())
    monkeypatch.delenv("MEMPORT_SNAPSHOT_START", raising=False)
    assert first_import_day(store) is None
    assert _first_partition(build_definitions()) == TODAY  # an empty store: nothing before today

    landing = Location.from_url(f"{backend}/landing")
    put(landing, "mem0/a.json", mem0_dump(2))
    ingest(store, landing, "mem0", "a.json")
    _backdated_manifest(store, datetime(2025, 3, 7, 23, 59, tzinfo=UTC))
    defs = build_definitions()
    assert _first_partition(defs) == "2025-03-07"

    # later imports never move it: the first import stays first (manifests are never deleted)
    ingest(store, landing, "mem0", "a.json", force=True)
    assert _first_partition(build_definitions()) == "2025-03-07"
    # a stray file in the imports folder is not history
    put(store.location, "imports/source_system=mem0/dump=x/notes.json", "")
    assert snapshot_start() == "2025-03-07"


def test_the_setting_pins_the_start_and_a_bad_one_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MEMPORT_STORE_URL", str(tmp_path / "store"))
    monkeypatch.setenv("MEMPORT_SNAPSHOT_START", "2024-12-01")
    assert _first_partition(build_definitions()) == "2024-12-01"
    monkeypatch.setenv("MEMPORT_SNAPSHOT_START", "Dec 1st")
    with pytest.raises(ConfigError, match=r"MEMPORT_SNAPSHOT_START='Dec 1st' is not a day; give YYYY-MM-DD"):
        snapshot_start()


def test_the_daily_schedule_skips_days_before_the_history() -> None:
    _, _, schedule = build_snapshots("2025-06-02")
    before = schedule(
        dg.build_schedule_context(scheduled_execution_time=datetime(2025, 6, 2, 0, 30, tzinfo=UTC))
    )
    assert isinstance(before, dg.SkipReason) and "snapshots start 2025-06-02" in str(before.skip_message)
    first = schedule(
        dg.build_schedule_context(scheduled_execution_time=datetime(2025, 6, 3, 0, 30, tzinfo=UTC))
    )
    assert isinstance(first, dg.RunRequest) and first.partition_key == "2025-06-02"
