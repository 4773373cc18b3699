"""Retention: keep the newest N daily snapshots and the newest snapshot of each of the newest M
months; delete the other manifests first, then every object no kept manifest names.

Deleting manifests first means a crash in between leaves unnamed objects (removed by the next
prune), never a kept manifest naming a deleted object. Do not prune while a snapshot is being
taken: a snapshot reuses objects that exist, and a concurrent prune could remove one it counted
on (the daily schedules run them an hour apart).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pipelines.backups.snapshot import existing_objects, object_path, read_manifest, snapshot_days
from pipelines.store.locations import Location

#: Copies in ``tmp/`` older than this are leftovers of a crashed snapshot.
TMP_GRACE = timedelta(hours=24)


def days_to_keep(days: list[str], *, keep_daily: int, keep_monthly: int) -> set[str]:
    newest_first = sorted(days, reverse=True)
    kept = set(newest_first[: max(keep_daily, 0)])
    months: dict[str, str] = {}
    for day in newest_first:
        months.setdefault(day[:7], day)  # the newest snapshot of each month
    kept |= set(sorted(months.values(), reverse=True)[: max(keep_monthly, 0)])
    return kept


@dataclass
class PruneResult:
    kept_days: list[str]
    deleted_days: list[str]
    deleted_objects: list[str] = field(default_factory=list)
    deleted_bytes: int = 0
    dry_run: bool = False


def prune(backup: Location, *, keep_daily: int, keep_monthly: int, dry_run: bool = False) -> PruneResult:
    days = snapshot_days(backup)
    kept = days_to_keep(days, keep_daily=keep_daily, keep_monthly=keep_monthly)
    result = PruneResult(sorted(kept), [d for d in days if d not in kept], dry_run=dry_run)
    named = {f["sha256"] for day in result.kept_days for f in read_manifest(backup, day)["files"]}
    objects = existing_objects(backup)
    candidates = [sha for sha in sorted(objects) if sha not in named]
    result.deleted_objects = [backup.uri(object_path(backup, sha)) for sha in candidates]
    result.deleted_bytes = sum(objects[sha] for sha in candidates)
    if dry_run:
        return result
    for day in result.deleted_days:
        backup.fs.rm(backup.path("snapshots", f"date={day}"), recursive=True)
    # re-read what is kept: a snapshot committed since the listing must keep its objects
    named |= {f["sha256"] for day in snapshot_days(backup) for f in read_manifest(backup, day)["files"]}
    doomed = [object_path(backup, sha) for sha in candidates if sha not in named]
    if doomed:
        backup.fs.rm(doomed)
    _remove_leftovers(backup)
    return result


def _remove_leftovers(backup: Location) -> None:
    """Copies in ``tmp/`` and files in ``objects/`` that are not objects (an interrupted atomic
    write's ``<sha256>.tmp-*``), once older than :data:`TMP_GRACE`."""
    cutoff = datetime.now(UTC) - TMP_GRACE
    objects = set(existing_objects(backup))
    old = []
    for folder in ("tmp", "objects"):
        base = backup.path(folder)
        if backup.fs.exists(base):
            old += [
                p
                for p, info in backup.fs.find(base, detail=True).items()
                if _mtime(info) < cutoff and (folder == "tmp" or p.rsplit("/", 1)[1] not in objects)
            ]
    if old:
        backup.fs.rm(old)


def _mtime(info: dict[str, object]) -> datetime:
    value = info.get("mtime") or info.get("LastModified") or info.get("created")
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.now(UTC)  # unknown: treat as young, keep it


def describe(result: PruneResult) -> str:
    verb = "would delete" if result.dry_run else "deleted"
    return json.dumps(
        {
            "kept": result.kept_days,
            f"{verb} snapshots": result.deleted_days,
            f"{verb} objects": len(result.deleted_objects),
            f"{verb} bytes": result.deleted_bytes,
        }
    )
