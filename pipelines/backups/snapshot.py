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
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import polars as pl

from connectors.errors import BackupError
from pipelines.store.episodes import EpisodeStore, live_flags
from pipelines.store.locations import Location

SNAPSHOT_VERSION = 1
CHUNK = 8 << 20
KINDS = ("episodes", "rejects", "import-manifest")


def manifest_path(backup: Location, day: str) -> str:
    return backup.path("snapshots", f"date={day}", "manifest.json")


def check_path(backup: Location, day: str) -> str:
    return backup.path("snapshots", f"date={day}", "check.json")


def object_path(backup: Location, sha256: str) -> str:
    return backup.path("objects", sha256[:2], sha256)


def parse_day(day: str) -> date:
    try:
        return date.fromisoformat(day)
    except ValueError as exc:
        raise BackupError(f"{day!r} is not a day; give YYYY-MM-DD (or 'latest' to restore)") from exc


def snapshot_days(backup: Location) -> list[str]:
    """Days with a committed snapshot (a manifest), oldest first."""
    pattern = backup.path("snapshots", "date=*", "manifest.json")
    return sorted(p.rsplit("/", 2)[1].removeprefix("date=") for p in backup.fs.glob(pattern))


def read_manifest(backup: Location, day: str) -> dict[str, Any]:
    path = manifest_path(backup, day)
    if not backup.fs.exists(path):
        known = snapshot_days(backup)
        raise BackupError(
            f"no snapshot for {day} under {backup.url()}; snapshots exist for: "
            f"{', '.join(known[-10:]) if known else 'none (take one with `memport snapshot`)'}"
        )
    return json.loads(backup.fs.cat_file(path))


def read_check(backup: Location, day: str) -> dict[str, Any] | None:
    path = check_path(backup, day)
    return json.loads(backup.fs.cat_file(path)) if backup.fs.exists(path) else None


def existing_objects(backup: Location) -> dict[str, int]:
    """sha256 → bytes of every object, from one listing (not one request per object)."""
    base = backup.path("objects")
    if not backup.fs.exists(base):
        return {}
    found = backup.fs.find(base, detail=True)
    return {p.rsplit("/", 1)[1]: int(info["size"]) for p, info in found.items()}


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


def _relative(store: EpisodeStore, path: str) -> str:
    root = store.location.root + "/"
    if not path.startswith(root):
        raise BackupError(
            f"an import manifest names {path}, outside the store {store.location.url()}; "
            "the store was moved by hand — restore it with `memport restore` instead"
        )
    return path[len(root) :]


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
        committed[_relative(store, path)] = raw[path]
        entries.append((path, manifest))
    files = [
        {"path": _relative(store, f["path"]), "kind": kind, "bytes": int(f["bytes"]), "rows": int(f["rows"])}
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
        for f in read_manifest(backup, day)["files"]:
            known[(f["path"], f["bytes"])] = f["sha256"]
    return known


def _makedirs(location: Location, path: str) -> None:
    if location.is_local:
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _copy_hashing(src_fs: Any, src: str, backup: Location) -> tuple[str, int, str]:
    """Stream ``src`` into ``<backup>/tmp/``, hashing as it goes: (sha256, bytes, tmp path)."""
    tmp = backup.path("tmp", uuid.uuid4().hex)
    _makedirs(backup, tmp)
    digest, size = hashlib.sha256(), 0
    try:
        with src_fs.open(src, "rb") as fin, backup.fs.open(tmp, "wb") as fout:
            while block := fin.read(CHUNK):
                digest.update(block)
                fout.write(block)
                size += len(block)
    except BaseException:
        if backup.fs.exists(tmp):
            backup.fs.rm(tmp)
        raise
    return digest.hexdigest(), size, tmp


def take_snapshot(
    store: EpisodeStore,
    backup: Location,
    day: str,
    *,
    now: datetime | None = None,
    fail_after_files: int | None = None,
) -> SnapshotResult:
    """Snapshot the store as of the end of ``day`` (UTC) into ``backup``; see the module doc.

    ``fail_after_files`` injects a crash after that many files were copied (tests of atomicity).
    """
    clock = time.perf_counter()
    now = now or datetime.now(UTC)
    end = datetime.combine(parse_day(day) + timedelta(days=1), dtime(), tzinfo=UTC)
    if end - timedelta(days=1) > now:
        raise BackupError(f"{day} has not begun yet (now {now:%Y-%m-%d %H:%M} UTC); snapshot a past day")
    data_files, manifests = store_as_of(store, end)
    known = _known_hashes(backup)
    objects = existing_objects(backup)
    entries: list[dict[str, Any]] = []
    copied_files = copied_bytes = 0

    def stored(sha256: str, size: int) -> bool:
        return objects.get(sha256) == size

    for rel, data in manifests.items():
        sha256 = hashlib.sha256(data).hexdigest()
        if not stored(sha256, len(data)):
            backup.write_atomic(object_path(backup, sha256), data)
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
            sha256, size, tmp = _copy_hashing(store.fs, src, backup)
            if size != f["bytes"]:
                backup.fs.rm(tmp)
                raise BackupError(
                    f"{store.location.uri(src)} has {size} bytes but its import manifest says "
                    f"{f['bytes']}: the store file was changed after it was committed"
                )
            if stored(sha256, size):
                backup.fs.rm(tmp)
            else:
                final = object_path(backup, sha256)
                _makedirs(backup, final)
                backup.fs.mv(tmp, final)
                objects[sha256] = size
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
        m, check = read_manifest(backup, day), read_check(backup, day)
        rows.append(
            {
                "day": date.fromisoformat(day),
                "taken_at": datetime.fromisoformat(m["taken_at"]),
                "files": m["totals"]["files"],
                "rows": m["totals"]["episode_rows"],
                "reject_rows": m["totals"]["reject_rows"],
                "bytes": m["totals"]["bytes"],
                "bytes_copied": m["copied"]["bytes"],
                "files_copied": m["copied"]["files"],
                "check_passed": check["passed"] if check else None,
                "checked_at": datetime.fromisoformat(check["checked_at"]) if check else None,
                "manifest": backup.uri(manifest_path(backup, day)),
            }
        )
    return pl.DataFrame(rows, schema=SNAPSHOTS_SCHEMA).sort("day", descending=True)
