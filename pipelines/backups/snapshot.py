"""Backups: daily snapshots of the episode store into content-addressed storage.

Layout under the backup URL (any fsspec location)::

    snapshots/date=YYYY-MM-DD/manifest.json   ← the snapshot, written last and atomically
    snapshots/date=YYYY-MM-DD/check.json      ← the restore check's verdict (pipelines.backups.restore)
    objects/<sha256[:2]>/<sha256>             ← file contents, each stored once
    tmp/<uuid>                                ← copies in flight; renamed into objects/ when whole

The snapshot of day D is the store as it stood at the end of D (UTC), judged by the store's own
ingest times: every import manifest whose ``finished_at`` is before D+1 00:00 UTC, and for each
partition the live ones among those (the store's own rule, ``live_flags``: the newest per tenant)
name the episode and reject files. Import manifests of older versions are kept too (small; the
``imports`` view shows them), their data files are not. Today's snapshot is the store as it is
now and is simply taken again by the next run. A day before the first ingest gives an empty
snapshot, which restores an empty store.

A file is copied only if no object with its content exists, so a snapshot costs what changed.
Parquet parts are immutable (a store path is never reused), so their sha256 is taken from earlier
snapshot manifests when path and size match, and they are not even read again. The manifest is
written after every object it names is whole: a crash leaves at most unnamed objects or ``tmp/``
files, which :func:`pipelines.backups.retention.prune` removes.

Trusting an object by name and size is what makes a no-change snapshot cheap, but a bit flipped
in an object would then be trusted forever. So when the newest restore check (``check.json``,
written by :func:`pipelines.backups.restore.prove`) failed or is unreadable, the snapshot reads
and hashes every object it would reuse, and copies again from the store any that no longer hash
to their name (``verify=True`` forces this, ``False`` skips it). A healthy backup pays nothing; a
damaged one is repaired by the next snapshot, at the cost of reading its objects once.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any

import polars as pl

from connectors.errors import BackupError
from pipelines.backups.manifests import KIND_DIRS, check_sha256, is_sha256, parse_manifest, safe_relpath
from pipelines.backups.transfer import copy_hashing, hash_file
from pipelines.store.episodes import EpisodeStore, live_flags
from pipelines.store.locations import Location

SNAPSHOT_VERSION = 1
KINDS = ("episodes", "rejects", "import-manifest")


def manifest_path(backup: Location, day: str) -> str:
    return backup.path("snapshots", f"date={day}", "manifest.json")


def check_path(backup: Location, day: str) -> str:
    return backup.path("snapshots", f"date={day}", "check.json")


def object_path(backup: Location, sha256: str) -> str:
    check_sha256(sha256, where=f"object name under {backup.url()}")
    return backup.path("objects", sha256[:2], sha256)


def parse_day(day: str) -> date:
    try:
        if len(day) != 10:  # fromisoformat also takes 20250301 and 2025-W09-6
            raise ValueError(day)
        return date.fromisoformat(day)
    except ValueError as exc:
        raise BackupError(f"{day!r} is not a day; give YYYY-MM-DD (or 'latest' to restore)") from exc


def snapshot_days(backup: Location) -> list[str]:
    """Days with a committed snapshot (a manifest), oldest first."""
    pattern = backup.path("snapshots", "date=*", "manifest.json")
    found = (p.rsplit("/", 2)[1].removeprefix("date=") for p in backup.fs.glob(pattern))
    return sorted(day for day in found if _is_day(day))


def _is_day(day: str) -> bool:
    try:
        return parse_day(day).isoformat() == day
    except BackupError:
        return False


def read_manifest(backup: Location, day: str) -> dict[str, Any]:
    """The snapshot of ``day``, checked (:func:`pipelines.backups.manifests.parse_manifest`)."""
    path = manifest_path(backup, parse_day(day).isoformat())
    if not backup.fs.exists(path):
        known = snapshot_days(backup)
        raise BackupError(
            f"no snapshot for {day} under {backup.url()}; snapshots exist for: "
            f"{', '.join(known[-10:]) if known else 'none (take one with `memport snapshot`)'}"
        )

    def hint() -> str:
        others = [d for d in snapshot_days(backup) if d != day][-5:]
        return (
            f"Restore another day (`memport restore --day <day>`; others: {', '.join(others) or 'none'}), "
            f"or take the snapshot of {day} again (`memport snapshot --day {day}`) while the store "
            "still holds its files"
        )

    return parse_manifest(backup.fs.cat_file(path), backup.uri(path), hint=hint)


def read_check(backup: Location, day: str) -> dict[str, Any] | None:
    """The restore check's verdict on ``day``; an unreadable one counts as failed."""
    path = check_path(backup, day)
    if not backup.fs.exists(path):
        return None
    try:
        verdict = json.loads(backup.fs.cat_file(path))
        if isinstance(verdict, dict) and isinstance(verdict.get("passed"), bool):
            return verdict
    except ValueError:
        pass
    return {"day": day, "passed": False, "checked_at": None, "error": f"{backup.uri(path)} is unreadable"}


def last_check_failed(backup: Location) -> bool:
    """Whether the newest restore check (by when it ran) failed: then objects are re-verified."""
    verdicts = [v for v in (read_check(backup, day) for day in snapshot_days(backup)) if v]
    if not verdicts:
        return False
    newest = max(verdicts, key=lambda v: (v["checked_at"] is not None, str(v["checked_at"])))
    return not newest["passed"] or newest["checked_at"] is None


def existing_objects(backup: Location) -> dict[str, int]:
    """sha256 → bytes of every object, from one listing (not one request per object).

    Only files named by their sha256 in their place count; others (an interrupted write's
    ``<sha256>.tmp-*``) are left to :func:`pipelines.backups.retention.prune`."""
    base = backup.path("objects")
    if not backup.fs.exists(base):
        return {}
    found = backup.fs.find(base, detail=True)
    named = {p: p.rsplit("/", 1)[1] for p in found}
    return {
        sha: int(found[p]["size"])
        for p, sha in named.items()
        if is_sha256(sha) and p == object_path(backup, sha)
    }


@dataclass(frozen=True)
class SnapshotResult:
    day: str
    path: str
    files: int
    rows: int
    bytes: int
    copied_files: int
    copied_bytes: int
    duration_s: float
    verified_files: int = 0  # reused objects read and hashed (see the module doc)
    verified_bytes: int = 0


def _relative(store: EpisodeStore, path: str, kind: str) -> str:
    root = store.location.root + "/"
    if not path.startswith(root):
        raise BackupError(
            f"an import manifest names {path}, outside the store {store.location.url()}; "
            "the store was moved by hand — restore it with `memport restore` instead"
        )
    return safe_relpath(path[len(root) :], where=f"store {store.location.url()}", under=KIND_DIRS[kind])


def store_as_of(store: EpisodeStore, end: datetime) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """The files of the store as it stood at ``end``: (data file entries, manifest relpath → bytes)."""
    pattern = store.location.path("imports", "source_system=*", "dump=*", "*.json")
    paths = sorted(store.fs.glob(pattern))
    raw: dict[str, bytes] = store.fs.cat(paths) if paths else {}  # concurrent on object stores
    committed: dict[str, bytes] = {}
    entries: list[tuple[str, dict[str, Any]]] = []
    for path in paths:
        manifest = json.loads(raw[path])
        if datetime.fromisoformat(manifest["finished_at"]) >= end:
            continue
        committed[_relative(store, path, "import-manifest")] = raw[path]
        entries.append((path, manifest))
    files = [
        {
            "path": _relative(store, f["path"], kind),
            "kind": kind,
            "bytes": int(f["bytes"]),
            "rows": int(f["rows"]),
        }
        for (_, manifest), live in zip(entries, live_flags(entries), strict=True)
        if live  # the store's own rule, as it stood at ``end``
        for kind in ("episodes", "rejects")
        for f in manifest["files"][kind]
    ]
    return files, committed


def _known_hashes(backup: Location) -> dict[tuple[str, int], str]:
    """(store path, bytes) → sha256 from earlier snapshots: immutable parts need no re-hashing."""
    known: dict[tuple[str, int], str] = {}
    for day in snapshot_days(backup):
        try:
            files = read_manifest(backup, day)["files"]
        except BackupError:  # a damaged manifest only costs hashing its files again
            continue
        for f in files:
            known[(f["path"], f["bytes"])] = f["sha256"]
    return known


def _makedirs(location: Location, path: str) -> None:
    if location.is_local:
        location.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)


def take_snapshot(
    store: EpisodeStore,
    backup: Location,
    day: str,
    *,
    now: datetime | None = None,
    verify: bool | None = None,
    fail_after_files: int | None = None,
) -> SnapshotResult:
    """Snapshot the store as of the end of ``day`` (UTC) into ``backup``; see the module doc.

    ``verify``: hash every object the snapshot reuses and copy again any that does not match;
    by default only when the newest restore check failed. ``fail_after_files`` injects a crash
    after that many files were copied (tests of atomicity).
    """
    clock = time.perf_counter()
    now = now or datetime.now(UTC)
    end = datetime.combine(parse_day(day) + timedelta(days=1), dtime(), tzinfo=UTC)
    if end - timedelta(days=1) > now:
        raise BackupError(f"{day} has not begun yet (now {now:%Y-%m-%d %H:%M} UTC); snapshot a past day")
    data_files, manifests = store_as_of(store, end)
    known = _known_hashes(backup)
    objects = existing_objects(backup)
    verify = last_check_failed(backup) if verify is None else verify
    entries: list[dict[str, Any]] = []
    copied_files = copied_bytes = verified_files = verified_bytes = 0
    checked: set[str] = set()
    bad: set[str] = set()

    def stored(sha256: str, size: int) -> bool:
        """An object with this content exists (and, when verifying, still hashes to its name)."""
        nonlocal verified_files, verified_bytes
        if objects.get(sha256) != size or sha256 in bad:
            return False
        if verify and sha256 not in checked:
            verified_files, verified_bytes = verified_files + 1, verified_bytes + size
            if hash_file(backup.fs, object_path(backup, sha256)) != sha256:
                bad.add(sha256)  # corrupt: the copy below replaces it
                return False
            checked.add(sha256)
        return True

    for rel, data in manifests.items():
        sha256 = hashlib.sha256(data).hexdigest()
        if not stored(sha256, len(data)):
            backup.write_atomic(object_path(backup, sha256), data)
            checked.add(sha256)
            bad.discard(sha256)
            objects[sha256] = len(data)
            copied_files, copied_bytes = copied_files + 1, copied_bytes + len(data)
        entries.append(
            {"path": rel, "kind": "import-manifest", "bytes": len(data), "rows": None, "sha256": sha256}
        )
    for f in data_files:
        sha256 = known.get((f["path"], f["bytes"]), "")
        if not (sha256 and stored(sha256, f["bytes"])):
            src = store.location.path(f["path"])
            if not store.fs.exists(src):
                raise BackupError(
                    f"{store.location.uri(src)} was live on {day} but is gone from the store (vacuumed "
                    "after a newer import) and no earlier snapshot holds it; that day can no longer be "
                    "snapshotted"
                )
            recorded = sha256
            sha256, size, tmp = copy_hashing(store.fs, src, backup)
            if size != f["bytes"] or recorded not in ("", sha256):
                backup.fs.rm(tmp)
                found = f"{size} bytes" if size != f["bytes"] else f"sha256 {sha256}"
                raise BackupError(
                    f"{store.location.uri(src)} has {found} but its import manifest says "
                    f"{f['bytes']} bytes and earlier snapshots sha256 {recorded or '-'}: the store file "
                    "was changed after it was committed; restore it (`memport restore`)"
                )
            if stored(sha256, size):
                backup.fs.rm(tmp)
            else:
                final = object_path(backup, sha256)
                _makedirs(backup, final)
                backup.fs.mv(tmp, final)
                objects[sha256] = size
                checked.add(sha256)
                bad.discard(sha256)
                copied_files, copied_bytes = copied_files + 1, copied_bytes + size
                if fail_after_files is not None and copied_files >= fail_after_files:
                    raise BackupError(f"injected failure after {fail_after_files} copied file(s)")
        entries.append({**f, "sha256": sha256})
    episodes = [f for f in entries if f["kind"] == "episodes"]
    rejects = [f for f in entries if f["kind"] == "rejects"]
    totals = {
        "files": len(entries),
        "bytes": sum(f["bytes"] for f in entries),
        "episode_rows": sum(f["rows"] for f in episodes),
        "reject_rows": sum(f["rows"] for f in rejects),
        "imports": len(manifests),
    }
    duration_s = round(time.perf_counter() - clock, 3)
    manifest: dict[str, Any] = {
        "snapshot_version": SNAPSHOT_VERSION,
        "day": day,
        "as_of": min(end, now).isoformat(),
        "taken_at": now.isoformat(),
        "store_url": store.location.url(),
        "store_root": store.location.root,
        "totals": totals,
        "copied": {"files": copied_files, "bytes": copied_bytes},
        "verified": {"files": verified_files, "bytes": verified_bytes},
        "duration_s": duration_s,
        "files": entries,
    }
    path = manifest_path(backup, day)
    if backup.fs.exists(check_path(backup, day)):  # a verdict on the replaced manifest is void
        backup.fs.rm(check_path(backup, day))
    backup.write_atomic(path, json.dumps(manifest, indent=1).encode())
    return SnapshotResult(
        day=day,
        path=backup.uri(path),
        files=totals["files"],
        rows=totals["episode_rows"],
        bytes=totals["bytes"],
        copied_files=copied_files,
        copied_bytes=copied_bytes,
        duration_s=duration_s,
        verified_files=verified_files,
        verified_bytes=verified_bytes,
    )


SNAPSHOTS_SCHEMA: dict[str, pl.DataType] = {
    "day": pl.Date(),
    "taken_at": pl.Datetime("us", "UTC"),
    "files": pl.Int64(),
    "rows": pl.Int64(),
    "reject_rows": pl.Int64(),
    "bytes": pl.Int64(),
    "bytes_copied": pl.Int64(),
    "files_copied": pl.Int64(),
    "check_passed": pl.Boolean(),
    "checked_at": pl.Datetime("us", "UTC"),
    "manifest": pl.String(),
}


def snapshots_frame(backup: Location) -> pl.DataFrame:
    """One row per snapshot, newest first: what the catalog's ``snapshots`` view shows."""
    rows = []
    for day in snapshot_days(backup):
        check = read_check(backup, day)
        row = {
            "day": date.fromisoformat(day),
            "check_passed": check["passed"] if check else None,
            "checked_at": datetime.fromisoformat(check["checked_at"])
            if check and check["checked_at"]
            else None,
            "manifest": backup.uri(manifest_path(backup, day)),
        }
        try:
            m = read_manifest(backup, day)
        except BackupError:  # damaged: listed, with no figures and a failed check
            rows.append({**row, "check_passed": False})
            continue
        rows.append(
            {
                **row,
                "taken_at": datetime.fromisoformat(m["taken_at"]),
                "files": m["totals"]["files"],
                "rows": m["totals"]["episode_rows"],
                "reject_rows": m["totals"]["reject_rows"],
                "bytes": m["totals"]["bytes"],
                "bytes_copied": m["copied"]["bytes"],
                "files_copied": m["copied"]["files"],
            }
        )
    return pl.DataFrame(rows, schema=SNAPSHOTS_SCHEMA).sort("day", descending=True)
