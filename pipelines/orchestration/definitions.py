"""The one ``Definitions`` of memport: every asset, check, job, sensor and resource."""

from __future__ import annotations

import dagster as dg

from pipelines.orchestration.assets import INGEST_ASSETS, episode_catalog
from pipelines.orchestration.backups import (
    BACKUP_JOBS,
    BACKUP_OP_JOBS,
    BACKUP_SCHEDULES,
    BACKUP_SENSORS,
    build_snapshots,
    snapshot_start,
)
from pipelines.orchestration.exports import (
    adhoc_export,
    episode_exports,
    expire_exports,
    expire_exports_schedule,
    export_specs_job,
    export_specs_schedule,
)
from pipelines.orchestration.jobs import INGEST_JOBS, catalog_automation, catalog_job
from pipelines.orchestration.resources import ExportProgress, resources_from_env
from pipelines.orchestration.sensors import landing_sensor


def build_definitions() -> dg.Definitions:
    """The definitions, with resources read from the environment now (the command line calls this
    at run time, so settings changed after import, as in tests, are the ones used). The snapshot
    days start where the store's history does (:func:`snapshot_start`)."""
    snapshots = build_snapshots(snapshot_start())
    return dg.Definitions(
        assets=[*INGEST_ASSETS, episode_catalog, episode_exports, snapshots.asset],
        asset_checks=[snapshots.check],
        jobs=[
            *INGEST_JOBS,
            catalog_job,
            export_specs_job,
            adhoc_export,
            expire_exports,
            *BACKUP_JOBS,
            *BACKUP_OP_JOBS,
        ],
        schedules=[export_specs_schedule, expire_exports_schedule, snapshots.schedule, *BACKUP_SCHEDULES],
        sensors=[landing_sensor, catalog_automation, *BACKUP_SENSORS],
        resources=resources_from_env() | {"export_progress": ExportProgress()},
    )


defs = build_definitions()
