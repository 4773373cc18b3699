"""``memport snapshot | restore | prune | migrate``: backups from the command line.

``snapshot`` runs the same Dagster job as the daily schedule (snapshot asset + restore check), so
the run shows in the UI; ``restore`` and ``migrate`` are plain Python, since they must work when
the Dagster instance is gone with the store.
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from typing import Any

from pipelines.cli.errors import friendly
from pipelines.settings import setting

#: Dagster's console logger at WARNING: the command prints its own lines.
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def snapshot_in_dagster(instance: Any, day: str | None = None, *, refresh_catalog: bool = True) -> int:
    """Run the ``snapshot_store`` job for ``day`` (default today), then refresh the catalog (unless
    the caller builds it afterwards itself, as ``memport run`` does)."""
    from pipelines.backups.snapshot import manifest_path, read_check, read_manifest
    from pipelines.orchestration.definitions import build_definitions
    from pipelines.store.locations import Location

    day = day or datetime.now(UTC).date().isoformat()
    _check_day(day)
    defs = build_definitions()
    result = defs.resolve_job_def("snapshot_store").execute_in_process(
        instance=instance, partition_key=day, raise_on_error=False, run_config=_QUIET
    )
    backup = Location.from_url(setting("MEMPORT_BACKUP_URL"))
    if not result.success:
        print(f"snapshot {day} FAILED (see the run in the Dagster UI)")
        return 1
    if refresh_catalog:
        defs.resolve_job_def("refresh_catalog").execute_in_process(instance=instance, run_config=_QUIET)
    m, check = read_manifest(backup, day), read_check(backup, day)
    verdict = "restore check passed" if check and check["passed"] else "restore check FAILED"
    print(
        f"snapshot {day}: {m['totals']['files']} files, {m['totals']['episode_rows']:,} episodes, "
        f"{m['totals']['bytes']:,} bytes ({m['copied']['bytes']:,} bytes copied); {verdict}"
    )
    print(f"  backup        : {backup.uri(manifest_path(backup, day))}  (catalog view: snapshots)")
    return 0 if check and check["passed"] else 1


def _check_day(day: str) -> None:
    from connectors.errors import ConfigError
    from pipelines.orchestration.backups import snapshot_partitions, snapshot_start

    try:
        date.fromisoformat(day)
    except ValueError as exc:
        raise ConfigError(f"--day {day!r} is not a day: {exc}; give YYYY-MM-DD, e.g. 2025-02-28") from None
    first = snapshot_start()
    if not snapshot_partitions(first).has_partition_key(day):
        raise ConfigError(
            f"--day {day}: snapshots are taken for days from {first} (the store's first import, or "
            "MEMPORT_SNAPSHOT_START) to today (UTC)"
        )


def _snapshot(args: argparse.Namespace) -> int:
    from pipelines.cli.instance import open_instance

    with open_instance() as instance:
        return snapshot_in_dagster(instance, args.day)


def _restore(args: argparse.Namespace) -> int:
    from pipelines.backups.restore import resolve_day, restore
    from pipelines.store.episodes import EpisodeStore
    from pipelines.store.locations import Location

    backup = Location.from_url(args.backup or setting("MEMPORT_BACKUP_URL"))
    day = resolve_day(backup, args.day)
    which = " (the latest)" if args.day == "latest" else ""
    print(f"restoring snapshot {day}{which} from {backup.url()} into {args.store}", flush=True)
    result = restore(backup, day, EpisodeStore.from_url(args.store), args.catalog, overwrite=args.overwrite)
    print(
        f"restored snapshot {result.day} into {result.store_url}: {result.files} files, "
        f"{result.bytes:,} bytes, {result.episodes:,} episode versions, every sha256 verified, "
        f"in {result.duration_s} s"
    )
    print(f"  written       : {result.written} file(s); {result.unchanged} already held the right bytes")
    print(f"  catalog       : {result.catalog_path}")
    if result.removed:
        print(f"  removed {result.removed} file(s) the snapshot does not have (--overwrite)")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from pipelines.backups.retention import prune
    from pipelines.store.locations import Location

    result = prune(
        Location.from_url(setting("MEMPORT_BACKUP_URL")),
        keep_daily=int(setting("MEMPORT_KEEP_DAILY")),
        keep_monthly=int(setting("MEMPORT_KEEP_MONTHLY")),
        dry_run=args.dry_run,
    )
    verb = "would delete" if args.dry_run else "deleted"
    print(f"kept {len(result.kept_days)} snapshot(s): {', '.join(result.kept_days) or '-'}")
    print(f"{verb} {len(result.deleted_days)} snapshot(s): {', '.join(result.deleted_days) or '-'}")
    print(f"{verb} {len(result.deleted_objects)} object(s), {result.deleted_bytes:,} bytes")
    for path in result.deleted_objects if args.dry_run else []:
        print(f"  {path}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    """Snapshot the configured store as of now, then restore that snapshot at the new place."""
    from pipelines.backups.restore import restore
    from pipelines.backups.snapshot import take_snapshot
    from pipelines.store.episodes import EpisodeStore
    from pipelines.store.locations import Location

    backup = Location.from_url(args.backup or setting("MEMPORT_BACKUP_URL"))
    day = datetime.now(UTC).date().isoformat()
    snap = take_snapshot(EpisodeStore.from_url(setting("MEMPORT_STORE_URL")), backup, day)
    print(f"snapshot {day}: {snap.files} files, {snap.bytes:,} bytes ({snap.copied_bytes:,} copied)")
    result = restore(backup, day, EpisodeStore.from_url(args.store), args.catalog, overwrite=args.overwrite)
    print(
        f"restored into {result.store_url} ({result.episodes:,} episode versions), "
        f"catalog {result.catalog_path}"
    )
    print("Point MEMPORT_STORE_URL and MEMPORT_CATALOG_PATH at the new place to use it.")
    return 0


def add_commands(sub: Any) -> None:
    """Add the backup commands to ``memport``'s sub-command parser."""
    snap = sub.add_parser("snapshot", help="snapshot the store into MEMPORT_BACKUP_URL, prove it restorable")
    snap.add_argument("--day", help="YYYY-MM-DD: the store as of the end of that day (default today)")
    snap.set_defaults(func=friendly(_snapshot))
    for name, func, text in (
        ("restore", _restore, "rebuild a store and catalog from a snapshot (every sha256 verified first)"),
        ("migrate", _migrate, "move the store elsewhere: snapshot now, then restore it at --store"),
    ):
        cmd = sub.add_parser(name, help=text)
        if name == "restore":
            cmd.add_argument("--day", default="latest", help="YYYY-MM-DD or latest (default)")
        cmd.add_argument("--store", required=True, help="target store URL (path, s3://…, gs://…)")
        cmd.add_argument("--catalog", required=True, help="target catalog file (DuckDB)")
        cmd.add_argument("--overwrite", action="store_true", help="replace a non-empty target store")
        cmd.add_argument("--backup", help="backup URL (default MEMPORT_BACKUP_URL)")
        cmd.set_defaults(func=friendly(func))
    prune = sub.add_parser("prune", help="apply backup retention (MEMPORT_KEEP_DAILY / _MONTHLY)")
    prune.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    prune.set_defaults(func=friendly(_prune))
