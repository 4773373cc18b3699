"""Backups in Dagster: the daily snapshot asset and its restore check, the daily schedules, the
restore and prune jobs (typed run config), and the catalog refresh after each snapshot."""

# No `from __future__ import annotations` here: Dagster reads these annotations at definition
# time to inject the context, config and resources, and cannot resolve them from strings.

import contextlib
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

import dagster as dg

from connectors.errors import ConfigError
from pipelines.backups.restore import prove, resolve_day, restore
from pipelines.backups.retention import prune
from pipelines.backups.snapshot import take_snapshot
from pipelines.orchestration.assets import INGEST_ASSETS
from pipelines.orchestration.jobs import catalog_job
from pipelines.orchestration.resources import BackupResource, EpisodeStoreResource
from pipelines.settings import setting
from pipelines.store.episodes import EpisodeStore, ingest_time

BACKUP_GROUP = "backups"


def first_import_day(store: EpisodeStore) -> str | None:
    """The UTC day of the store's first import (from the manifests' names: one listing, no reads),
    or None for an empty store."""
    pattern = store.location.path("imports", "source_system=*", "dump=*", "*.json")
    days = []
    for path in store.fs.glob(pattern):
        with contextlib.suppress(ValueError):  # not a manifest memport wrote: not history
            days.append(ingest_time(path.rsplit("/", 1)[1].removesuffix(".json")).date())
    return min(days).isoformat() if days else None


def snapshot_start() -> str:
    """The first day of the snapshot partitions: ``MEMPORT_SNAPSHOT_START`` when set; otherwise the
    day of the store's first import, so the UI lists no "missing" days from before the store had any
    history; today for an empty (or, at this moment, unreachable) store.

    Read when the definitions are built (each code-location load). It stays put across loads: import
    manifests are never deleted (restore and migrate keep them), so the first one stays first. It
    moves only while the store is empty (day by day, until the first ingest) or when the store is
    replaced by another, whose history then rules. Pin it with MEMPORT_SNAPSHOT_START where the
    listing is unwelcome (a very large object store) or the start must never move.
    """
    pinned = setting("MEMPORT_SNAPSHOT_START").strip()
    if pinned:
        try:
            return date.fromisoformat(pinned).isoformat()
        except ValueError:
            raise ConfigError(
                f"MEMPORT_SNAPSHOT_START={pinned!r} is not a day; give YYYY-MM-DD or leave it empty "
                "(the store's first import day)"
            ) from None
    today = datetime.now(UTC).date().isoformat()
    try:
        return first_import_day(EpisodeStore.from_url(setting("MEMPORT_STORE_URL"))) or today
    except Exception as exc:  # the definitions must load for the UI to say what is wrong
        dg.get_dagster_logger().warning(
            f"snapshot partitions start today: the store's first import could not be read ({exc})"
        )
        return today


def snapshot_partitions(first_day: str) -> dg.DailyPartitionsDefinition:
    """One partition per UTC day from ``first_day``; ``end_offset=1`` makes today one too (taken
    "as of now")."""
    return dg.DailyPartitionsDefinition(start_date=first_day, end_offset=1, timezone="UTC")


#: The snapshot job selects the asset by key, so it does not depend on the partitions' start.
snapshot_job = dg.define_asset_job(
    "snapshot_store",
    selection=dg.AssetSelection.assets("store_snapshot"),
    description="Take one day's snapshot of the store, then prove it restorable.",
)


class Snapshots(NamedTuple):
    asset: dg.AssetsDefinition
    check: dg.AssetChecksDefinition
    schedule: dg.ScheduleDefinition


def build_snapshots(first_day: str) -> Snapshots:
    """The snapshot asset, its restore check and its daily schedule, over days from ``first_day``
    (:func:`snapshot_start` for the shipped definitions)."""
    days = snapshot_partitions(first_day)

    @dg.asset(
        name="store_snapshot",
        group_name=BACKUP_GROUP,
        partitions_def=days,
        # each day's snapshot reads every dump partition of the store as it stood that day
        deps=[dg.AssetDep(a.key, partition_mapping=dg.AllPartitionMapping()) for a in INGEST_ASSETS],
        kinds={"parquet", "json"},
        description=(
            "A snapshot of the episode store as it stood at the end of the partition's day (UTC), by the "
            "store's own ingest times: every import manifest finished by then and, per dump partition and "
            "tenant, the episode and reject files of the newest of them. Writes `<backup>/snapshots/"
            "date=<day>/manifest.json` (path, kind, bytes, rows, sha256 per file) after copying into "
            "`<backup>/objects/` only the files no earlier snapshot copied. Today's partition is the "
            f"store as of now. Days start at {first_day}, the store's first import (or "
            "MEMPORT_SNAPSHOT_START)."
        ),
    )
    def store_snapshot(
        context: dg.AssetExecutionContext, episode_store: EpisodeStoreResource, backup: BackupResource
    ) -> dg.MaterializeResult:
        return _snapshot(context, episode_store, backup)

    @dg.asset_check(
        asset=store_snapshot,
        partitions_def=days,
        description=(
            "Restores the snapshot into scratch space (verifying every sha256), builds its catalog, and "
            "compares episode and reject row counts and an order-independent checksum over every column "
            "with the live store's files the snapshot names."
        ),
    )
    def snapshot_restorable(
        context: dg.AssetCheckExecutionContext, episode_store: EpisodeStoreResource, backup: BackupResource
    ) -> dg.AssetCheckResult:
        return _prove(context, episode_store, backup)

    @dg.schedule(
        name="daily_snapshot",
        job=snapshot_job,
        cron_schedule="30 0 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Snapshots the day that just ended, at 00:30 UTC.",
    )
    def daily_snapshot(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        day = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
        if day < first_day:
            return dg.SkipReason(f"{day} is before the store's history (snapshots start {first_day})")
        return dg.RunRequest(run_key=f"snapshot-{day}", partition_key=day)

    return Snapshots(store_snapshot, snapshot_restorable, daily_snapshot)


def _snapshot(
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


def _prove(
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


BACKUP_JOBS = [snapshot_job]
BACKUP_OP_JOBS = [restore_store, prune_backups]
BACKUP_SCHEDULES: list[dg.ScheduleDefinition] = [daily_prune]  # daily_snapshot: build_snapshots
BACKUP_SENSORS: list[dg.SensorDefinition] = [catalog_after_snapshot]
