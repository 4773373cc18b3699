"""Every way of ingesting refreshes the catalog, once: asset backfills (the asset's page, the lineage
view, ``launchPartitionBackfill``: runs of ``__ASSET_JOB``), job backfills and the landing sensor
(runs of ``ingest_<system>``), and ``memport run`` (which refreshes it itself).

Each test ticks the catalog's automation the way the daemon does (``evaluate_automation_conditions``
with the previous tick's cursor), after a first tick like the one the daemon makes at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from pipelines.orchestration.assets import INGEST_ASSETS, episode_catalog, ingest_asset_key
from pipelines.orchestration.definitions import defs as shipped_defs
from pipelines.orchestration.jobs import INGEST_JOBS, catalog_job
from pipelines.orchestration.resources import (
    BackupResource,
    EpisodeStoreResource,
    ExportTarget,
    ImportSettings,
    LandingZone,
)
from pipelines.store.locations import Location
from tests.conftest import FIXTURES, put

CATALOG = dg.AssetKey("episode_catalog")
DUMPS = ["a.json", "b.json", "sub/c.json"]


@pytest.fixture
def resources(tmp_path: Path) -> dict[str, Any]:
    base = tmp_path / "base"
    landing = Location.from_url(str(base / "landing"))
    for name in DUMPS:
        put(landing, f"mem0/{name}", (FIXTURES / "mem0" / "paginated_v3.json").read_bytes())
    return {
        "export_target": ExportTarget(url=str(base / "exports")),
        "landing": LandingZone(url=str(base / "landing")),
        "episode_store": EpisodeStoreResource(
            url=str(base / "store"), catalog_path=str(tmp_path / "episodes.duckdb")
        ),
        "import_settings": ImportSettings(tenant_id="acme"),
        "backup": BackupResource(url=str(base / "backups")),
    }


@pytest.fixture
def defs(resources: dict[str, Any]) -> dg.Definitions:
    """The shipped assets and jobs (and so the catalog's automation condition), on test resources."""
    return dg.Definitions(
        assets=[*INGEST_ASSETS, episode_catalog], jobs=[*INGEST_JOBS, catalog_job], resources=resources
    )


class Daemon:
    """Ticks the catalog's automation as the daemon does, carrying the cursor from tick to tick."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.defs, self.instance = defs, instance
        self.cursor: Any = None
        assert self.tick() == 0, "the first tick (start-up) requests nothing"

    def tick(self) -> int:
        """How many catalog refreshes this tick requests (and nothing else may be requested)."""
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        requested = {r.key: r.true_subset.size for r in result.results if r.true_subset.size}
        assert set(requested) <= {CATALOG}, requested
        return requested.get(CATALOG, 0)


def catalog_refreshes(instance: dg.DagsterInstance) -> int:
    return len(instance.fetch_materializations(CATALOG, limit=1000).records)


def refresh(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    """What the daemon does with the tick's request: one run of the catalog."""
    assert defs.resolve_job_def("refresh_catalog").execute_in_process(instance=instance).success


def test_the_shipped_automation_sensor_runs_by_default_and_targets_the_catalog() -> None:
    sensors = [s for s in shipped_defs.sensors or [] if isinstance(s, dg.AutomationConditionSensorDefinition)]
    assert len(sensors) == 1
    (sensor,) = sensors
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert episode_catalog.automation_conditions_by_key[CATALOG] is not None
    # the old run-status sensor (one rebuild per ingest run, blind to asset backfills) is gone
    assert "catalog_after_ingest" not in {s.name for s in shipped_defs.sensors or []}


def test_an_asset_backfill_refreshes_the_catalog_once_when_it_is_done(
    defs: dg.Definitions, tmp_path: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("mem0_dumps", DUMPS)
    daemon = Daemon(defs, instance)
    # what a backfill from the asset's page runs: the implicit asset job, one run per partition
    asset_job = defs.resolve_implicit_global_asset_job_def()
    assert asset_job.name == "__ASSET_JOB"
    for key in DUMPS:
        result = asset_job.execute_in_process(
            instance=instance, partition_key=key, asset_selection=[ingest_asset_key("mem0")]
        )
        assert result.success
    assert daemon.tick() == 1, "one refresh for the whole backfill"
    assert daemon.tick() == 0, "requested once: not again on the next tick"
    refresh(defs, instance)
    assert daemon.tick() == 0, "the refresh itself triggers nothing"
    with duckdb.connect(str(tmp_path / "episodes.duckdb"), read_only=True) as con:
        dumps = {d for (d,) in con.sql("SELECT DISTINCT dump FROM imports").fetchall()}
    assert dumps == set(DUMPS), "the catalog reflects every partition of the backfill"


def test_a_backfill_still_running_defers_the_refresh_until_it_is_done(defs: dg.Definitions) -> None:
    """A job backfill (or the landing sensor) launches ``ingest_<system>`` runs; while any of them is
    queued or running, the catalog waits, then refreshes once for all of them."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("mem0_dumps", DUMPS)
    daemon = Daemon(defs, instance)
    job = defs.resolve_job_def("ingest_mem0")
    # the backfill's last run is queued (created, not started) while the first ones finish
    queued = instance.create_run_for_job(job, tags={"dagster/partition": DUMPS[-1]})
    for key in DUMPS[:-1]:
        assert job.execute_in_process(instance=instance, partition_key=key).success
        assert daemon.tick() == 0, "an ingest run of the backfill is still queued"
    instance.report_run_canceled(queued)  # the run coordinator would start it; here it is re-run
    assert job.execute_in_process(instance=instance, partition_key=DUMPS[-1]).success
    assert daemon.tick() == 1, "one refresh for the whole backfill, not one per partition"
    refresh(defs, instance)
    assert daemon.tick() == 0
    assert catalog_refreshes(instance) == 1


def test_a_failed_partition_does_not_block_the_refresh_of_the_others(
    defs: dg.Definitions, resources: dict[str, Any]
) -> None:
    landing = Location.from_url(resources["landing"].url)
    put(landing, "mem0/bad.json", '{"agents": []}')
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("mem0_dumps", [*DUMPS, "bad.json"])
    daemon = Daemon(defs, instance)
    job = defs.resolve_job_def("ingest_mem0")
    assert not job.execute_in_process(
        instance=instance, partition_key="bad.json", raise_on_error=False
    ).success
    assert daemon.tick() == 0, "nothing new to show"
    assert job.execute_in_process(instance=instance, partition_key=DUMPS[0]).success
    assert daemon.tick() == 1, "a dump that failed (and other dumps never ingested) do not hold it back"


def test_runs_that_refresh_the_catalog_themselves_get_no_second_refresh(defs: dg.Definitions) -> None:
    """``memport run`` (ingest every dump, then refresh the catalog) and a lineage-view launch of the
    ingest asset together with the catalog: the daemon adds no refresh of its own."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("mem0_dumps", DUMPS)
    daemon = Daemon(defs, instance)
    job = defs.resolve_job_def("ingest_mem0")
    for key in DUMPS:  # as `memport run` does, with no tick in between or with ticks in between
        assert job.execute_in_process(instance=instance, partition_key=key).success
    refresh(defs, instance)
    assert daemon.tick() == 0
    assert catalog_refreshes(instance) == 1

    asset_job = defs.resolve_implicit_global_asset_job_def()
    result = asset_job.execute_in_process(
        instance=instance, partition_key=DUMPS[0], asset_selection=[ingest_asset_key("mem0"), CATALOG]
    )
    assert result.success
    assert daemon.tick() == 0, "the run that ingested also refreshed the catalog"
    assert catalog_refreshes(instance) == 2
