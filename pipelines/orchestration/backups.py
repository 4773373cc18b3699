"""Backups in Dagster: the daily snapshot asset and its restore check, the daily schedules, the
restore and prune jobs (typed run config), and the catalog refresh after each snapshot."""

# No `from __future__ import annotations` here: Dagster reads these annotations at definition
# time to inject the context, config and resources, and cannot resolve them from strings.

from datetime import timedelta

import dagster as dg

from pipelines.backups.restore import prove, resolve_day, restore
from pipelines.backups.retention import prune
from pipelines.backups.snapshot import take_snapshot
from pipelines.orchestration.assets import INGEST_ASSETS
from pipelines.orchestration.jobs import catalog_job
from pipelines.orchestration.resources import BackupResource, EpisodeStoreResource
from pipelines.store.episodes import EpisodeStore

BACKUP_GROUP = "backups"
#: Backfills can start here; a day before the store's first ingest gives an empty snapshot.
FIRST_DAY = "2025-01-01"

#: One partition per UTC day; ``end_offset=1`` makes today a partition too (taken "as of now").
snapshot_days = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, end_offset=1, timezone="UTC")


@dg.asset(
    group_name=BACKUP_GROUP,
    partitions_def=snapshot_days,
    # each day's snapshot reads every dump partition of the store as it stood that day
    deps=[dg.AssetDep(a.key, partition_mapping=dg.AllPartitionMapping()) for a in INGEST_ASSETS],
    kinds={"parquet", "json"},
    description=(
        "A snapshot of the episode store as it stood at the end of the partition's day (UTC), by the "
        "store's own ingest times: every import manifest finished by then and, per dump partition and "
        "tenant, the episode and reject files of the newest of them. Writes `<backup>/snapshots/date=<day>/"
        "manifest.json` (path, kind, bytes, rows, sha256 per file) after copying into "
        "`<backup>/objects/` only the files no earlier snapshot copied. Today's partition is the store "
        "as of now. Backfilling a day before the first ingest gives an empty snapshot."
    ),
)
def store_snapshot(
    context: dg.AssetExecutionContext, episode_store: EpisodeStoreResource, backup: BackupResource
) -> dg.MaterializeResult:
    result = take_snapshot(episode_store.store(), backup.location(), context.partition_key)
    context.log.info(
        f"snapshot {result.day}: {result.files} files, {result.rows:,} episodes, {result.bytes:,} bytes; "
        f"copied {result.copied_files} files ({result.copied_bytes:,} bytes) in {result.duration_s} s"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.rows),
            "manifest": dg.MetadataValue.path(result.path),
            "files": dg.MetadataValue.int(result.files),
            "bytes": dg.MetadataValue.int(result.bytes),
            "files_copied": dg.MetadataValue.int(result.copied_files),
            "bytes_copied": dg.MetadataValue.int(result.copied_bytes),
            "bytes_verified": dg.MetadataValue.int(result.verified_bytes),
            "duration_s": dg.MetadataValue.float(result.duration_s),
        }
    )


@dg.asset_check(
    asset=store_snapshot,
    partitions_def=snapshot_days,
    description=(
        "Restores the snapshot into scratch space (verifying every sha256), builds its catalog, and "
        "compares episode and reject row counts and an order-independent checksum over every column "
        "with the live store's files the snapshot names."
    ),
)
def snapshot_restorable(
    context: dg.AssetCheckExecutionContext, episode_store: EpisodeStoreResource, backup: BackupResource
) -> dg.AssetCheckResult:
    day = context.partition_key
    verdict = prove(backup.location(), day, episode_store.store())
    if not verdict["passed"]:
        context.log.error(f"snapshot {day} is NOT restorable: {verdict.get('error') or verdict['problems']}")
    return dg.AssetCheckResult(
        passed=bool(verdict["passed"]),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"verdict": dg.MetadataValue.json(verdict)},
        description=verdict.get("error") or "; ".join(verdict.get("problems", [])) or None,
    )


snapshot_job = dg.define_asset_job(
    "snapshot_store",
    selection=dg.AssetSelection.assets(store_snapshot),
    description="Take one day's snapshot of the store, then prove it restorable.",
)


@dg.schedule(
    job=snapshot_job,
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Snapshots the day that just ended, at 00:30 UTC.",
)
def daily_snapshot(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"snapshot-{day}", partition_key=day)


class RestoreConfig(dg.Config):
    """Which snapshot to restore, and where to."""

    day: str = "latest"  # YYYY-MM-DD, or "latest"
    store_url: str  # the target store: any fsspec URL
    catalog_path: str  # the target catalog (a local DuckDB file)
    overwrite: bool = False  # replace a non-empty target store


@dg.op(description="Verify every object of the snapshot, then rebuild the store and its catalog.")
def restore_snapshot(context: dg.OpExecutionContext, config: RestoreConfig, backup: BackupResource) -> None:
    day = resolve_day(backup.location(), config.day)
    context.log.info(f"restoring snapshot {day}{' (the latest)' if config.day == 'latest' else ''}")
    result = restore(
        backup.location(),
        day,
        EpisodeStore.from_url(config.store_url),
        config.catalog_path,
        overwrite=config.overwrite,
    )
    context.log.info(
        f"restored snapshot {result.day} into {result.store_url}: {result.files} files, "
        f"{result.bytes:,} bytes, {result.episodes:,} episode versions; catalog {result.catalog_path}"
    )


@dg.job(description="Restore a snapshot (a day or latest) into a store and catalog; see RestoreConfig.")
def restore_store() -> None:
    restore_snapshot()


class PruneConfig(dg.Config):
    dry_run: bool = False  # only list what would be deleted


@dg.op(description="Delete snapshots outside retention, then the objects no kept snapshot names.")
def prune_snapshots(context: dg.OpExecutionContext, config: PruneConfig, backup: BackupResource) -> None:
    result = prune(
        backup.location(),
        keep_daily=backup.keep_daily,
        keep_monthly=backup.keep_monthly,
        dry_run=config.dry_run,
    )
    verb = "would delete" if result.dry_run else "deleted"
    context.log.info(
        f"kept {len(result.kept_days)} snapshot(s); {verb} {len(result.deleted_days)} snapshot(s) "
        f"{result.deleted_days} and {len(result.deleted_objects)} object(s), {result.deleted_bytes:,} bytes"
    )


@dg.job(description="Apply backup retention (keep N daily, M monthly); dry_run lists what would go.")
def prune_backups() -> None:
    prune_snapshots()


@dg.schedule(
    job=prune_backups,
    cron_schedule="30 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Applies retention daily, two hours after the snapshot (never concurrently with it).",
)
def daily_prune(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"prune-{context.scheduled_execution_time:%Y-%m-%d}")


#: The catalog's ``snapshots`` view follows every snapshot run (and its check's verdict).
@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[snapshot_job],
    request_job=catalog_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
def catalog_after_snapshot(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"catalog-after-{context.dagster_run.run_id}")


BACKUP_ASSETS: list[dg.AssetsDefinition] = [store_snapshot]
BACKUP_CHECKS: list[dg.AssetChecksDefinition] = [snapshot_restorable]
BACKUP_JOBS = [snapshot_job]
BACKUP_OP_JOBS = [restore_store, prune_backups]
BACKUP_SCHEDULES: list[dg.ScheduleDefinition] = [daily_snapshot, daily_prune]
BACKUP_SENSORS: list[dg.SensorDefinition] = [catalog_after_snapshot]
