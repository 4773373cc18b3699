"""Backups in Dagster: the snapshot asset and its restore check in-process, the restore job, the
schedules, and the catalog's snapshots view."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from pipelines.backups.snapshot import object_path, read_manifest
from pipelines.orchestration.assets import episode_catalog
from pipelines.orchestration.backups import build_snapshots, restore_store
from pipelines.orchestration.definitions import defs
from pipelines.orchestration.resources import BackupResource, EpisodeStoreResource, ExportTarget
from pipelines.store.catalog import connect
from pipelines.store.episodes import EpisodeStore
from pipelines.store.locations import Location
from tests.conftest import put
from tests.test_store import ingest, mem0_dump

TODAY = datetime.now(UTC).date().isoformat()
store_snapshot, snapshot_restorable, daily_snapshot = build_snapshots("2025-01-01")


@pytest.fixture
def resources(tmp_path: Path, backend: str) -> dict[str, dg.ConfigurableResource]:
    return {
        "episode_store": EpisodeStoreResource(
            url=f"{backend}/store", catalog_path=str(tmp_path / "episodes.duckdb")
        ),
        "backup": BackupResource(url=f"{backend}/backups", keep_daily=2, keep_monthly=1),
        "export_target": ExportTarget(url=f"{backend}/exports"),
    }


def test_snapshot_asset_check_catalog_and_restore_job(
    resources: dict[str, dg.ConfigurableResource], backend: str, tmp_path: Path
) -> None:
    store = EpisodeStore.from_url(f"{backend}/store")
    landing = Location.from_url(f"{backend}/landing")
    put(landing, "mem0/a.json", mem0_dump(25))
    ingest(store, landing, "mem0", "a.json")
    instance = dg.DagsterInstance.ephemeral()

    result = dg.materialize(
        [store_snapshot, snapshot_restorable], resources=resources, instance=instance, partition_key=TODAY
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node("store_snapshot")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["dagster/row_count"] == 25 and meta["bytes_copied"] == meta["bytes"] > 0
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.check_name == "snapshot_restorable"

    assert dg.materialize([episode_catalog], resources=resources, instance=instance).success
    with connect(tmp_path / "episodes.duckdb") as con:
        rows = con.sql(
            "SELECT day::VARCHAR, files, rows, bytes_copied, check_passed FROM snapshots"
        ).fetchall()
    assert rows == [(TODAY, 2, 25, meta["bytes"], True)]

    target = f"{backend}/restored"
    run = restore_store.execute_in_process(
        instance=instance,
        resources={"backup": resources["backup"]},
        run_config=dg.RunConfig(
            ops={
                "restore_snapshot": {
                    "config": {"store_url": target, "catalog_path": str(tmp_path / "r.duckdb")}
                }
            }
        ),
    )
    assert run.success
    with connect(tmp_path / "r.duckdb") as con:
        assert con.sql("SELECT count(*) FROM episodes").fetchall() == [(25,)]

    # a damaged object (same size, other bytes: a re-snapshot does not notice) fails the check loudly
    backup = Location.from_url(f"{backend}/backups")
    victim = next(f for f in read_manifest(backup, TODAY)["files"] if f["kind"] == "episodes")
    obj = object_path(backup, victim["sha256"])
    backup.fs.pipe_file(obj, bytes(len(backup.fs.cat_file(obj))))
    failed = dg.materialize(
        [store_snapshot, snapshot_restorable], resources=resources, instance=instance, partition_key=TODAY
    )
    (check,) = failed.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert victim["sha256"] in (check.description or "")


def test_schedule_snapshots_the_day_that_ended() -> None:
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2025, 6, 2, 0, 30, tzinfo=UTC))
    request = daily_snapshot(context)
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2025-06-01"
    assert defs.resolve_schedule_def("daily_snapshot") and defs.resolve_schedule_def("daily_prune")
    assert defs.resolve_job_def("prune_backups") and defs.resolve_job_def("restore_store")
