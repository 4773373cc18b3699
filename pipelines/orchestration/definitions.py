"""The one ``Definitions`` of memport: every asset, check, job, sensor and resource."""

from __future__ import annotations

import dagster as dg

from pipelines.orchestration.assets import INGEST_ASSETS, episode_catalog
from pipelines.orchestration.backups import (
    BACKUP_ASSETS,
    BACKUP_CHECKS,
    BACKUP_JOBS,
    BACKUP_OP_JOBS,
    BACKUP_SCHEDULES,
    BACKUP_SENSORS,
)
from pipelines.orchestration.jobs import INGEST_JOBS, catalog_after_ingest, catalog_job
from pipelines.orchestration.resources import resources_from_env
from pipelines.orchestration.sensors import landing_sensor

defs = dg.Definitions(
    assets=[*INGEST_ASSETS, episode_catalog, *BACKUP_ASSETS],
    asset_checks=BACKUP_CHECKS,
    jobs=[*INGEST_JOBS, catalog_job, *BACKUP_JOBS, *BACKUP_OP_JOBS],
    schedules=BACKUP_SCHEDULES,
    sensors=[landing_sensor, catalog_after_ingest, *BACKUP_SENSORS],
    resources=resources_from_env(),
)
