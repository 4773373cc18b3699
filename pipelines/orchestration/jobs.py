"""Jobs: one ingest job per system (partitioned by dump), and the catalog refresh."""

# No `from __future__ import annotations` here: Dagster reads these annotations at definition
# time to inject the context and resources, and cannot resolve them from strings.

import dagster as dg

from connectors import registry
from pipelines.orchestration.assets import MAX_DUMPS_PER_RUN, ingest_asset_key


def ingest_job_name(system: str) -> str:
    return f"ingest_{system}"


INGEST_JOBS = [
    dg.define_asset_job(
        ingest_job_name(system),
        selection=dg.AssetSelection.assets(ingest_asset_key(system)),
        description=(
            f"Ingest {system} dumps (pick the partitions) into the episode store; a backfill takes up to "
            f"{MAX_DUMPS_PER_RUN} dumps per run."
        ),
    )
    for system in registry.CONNECTORS
]

catalog_job = dg.define_asset_job(
    "refresh_catalog",
    selection=dg.AssetSelection.assets("episode_catalog"),
    description="Rebuild the DuckDB catalog over the store's live partitions.",
)


#: Evaluates the catalog's automation condition (``CATALOG_AUTOMATION``: one refresh after any
#: ingest, backfill or not, once nothing is in flight). On by default, unlike the sensor Dagster
#: would otherwise create for it.
catalog_automation = dg.AutomationConditionSensorDefinition(
    "catalog_automation",
    target=dg.AssetSelection.assets("episode_catalog"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Refreshes the catalog once after ingest runs or backfills finish (any way launched).",
)
