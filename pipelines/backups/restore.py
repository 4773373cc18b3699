"""Restore a snapshot into a store (verified first), and prove a snapshot restorable.

Restore reads every object the snapshot names and checks its sha256 *before* it touches the
target; a missing or corrupt object stops it with a message naming the object and the store file
it holds. Then it writes the data files, then the import manifests (the store's commits, so a
crash mid-restore leaves only uncommitted files), then rebuilds the catalog. Import manifests
name their files by absolute path; restore re-roots those paths to the target store (the backed-
up bytes are verified, the written manifest differs from them only in that root).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from connectors.errors import BackupError
from pipelines.backups.scratch import scratch_space
from pipelines.backups.snapshot import (
    CHUNK,
    check_path,
    existing_objects,
    object_path,
    read_manifest,
    snapshot_days,
)
from pipelines.store.catalog import build_catalog, connect
from pipelines.store.episodes import EpisodeStore
from pipelines.store.locations import Location

STORE_KINDS = ("episodes", "rejects", "imports")


def resolve_day(backup: Location, day: str) -> str:
    if day != "latest":
        return day
    days = snapshot_days(backup)
    if not days:
        raise BackupError(f"no snapshot under {backup.url()}; take one with `memport snapshot`")
    return days[-1]


def _sha256(fs: Any, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify(backup: Location, manifest: dict[str, Any]) -> None:
    """Every object the snapshot names exists, has its size, and hashes to its name."""
    objects = existing_objects(backup)
    problems = []
    for f in manifest["files"]:
        obj = object_path(backup, f["sha256"])
        where = f"object {backup.uri(obj)} (store file {f['path']})"
        if f["sha256"] not in objects:
            problems.append(f"{where} is missing")
        elif objects[f["sha256"]] != f["bytes"]:
            problems.append(f"{where} has {objects[f['sha256']]} bytes, expected {f['bytes']}")
        elif (actual := _sha256(backup.fs, obj)) != f["sha256"]:
            problems.append(f"{where} is corrupt: its sha256 is {actual}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise BackupError(
            f"snapshot {manifest['day']} cannot be restored, nothing was changed: "
            + "; ".join(problems[:5])
            + more
        )


def _target_files(target: EpisodeStore) -> list[str]:
    found: list[str] = []
    for kind in STORE_KINDS:
        base = target.location.path(kind)
        if target.fs.exists(base):
            found += target.fs.find(base)
    return found


def _reroot(data: bytes, old_root: str, target: EpisodeStore) -> bytes:
    manifest = json.loads(data)
    for kind in ("episodes", "rejects"):
        for f in manifest["files"][kind]:
            rel = f["path"].removeprefix(old_root + "/")
            f["path"] = target.location.path(rel)
    return json.dumps(manifest, indent=2).encode()


@dataclass(frozen=True)
class RestoreResult:
    day: str
    store_url: str
    catalog_path: Path
    files: int
    bytes: int
    episodes: int
    removed: int
    duration_s: float


def restore(
    backup: Location,
    day: str,
    target: EpisodeStore,
    catalog_path: str | Path,
    *,
    overwrite: bool = False,
) -> RestoreResult:
    """Rebuild ``target`` and its catalog as they were in the snapshot of ``day`` (or ``latest``)."""
    clock = time.perf_counter()
    day = resolve_day(backup, day)
    manifest = read_manifest(backup, day)
    existing = _target_files(target)
    if existing and not overwrite:
        raise BackupError(
            f"the target store {target.location.url()} is not empty ({len(existing)} files, e.g. "
            f"{existing[0]}); restore into an empty location, or pass overwrite to replace it"
        )
    verify(backup, manifest)
    wanted = set()
    data = [f for f in manifest["files"] if f["kind"] != "import-manifest"]
    commits = [f for f in manifest["files"] if f["kind"] == "import-manifest"]
    for f in data:
        dest = target.location.path(f["path"])
        wanted.add(dest)
        if target.location.is_local:
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with (
            backup.fs.open(object_path(backup, f["sha256"]), "rb") as fin,
            target.fs.open(dest, "wb") as fout,
        ):
            while block := fin.read(CHUNK):
                digest.update(block)
                fout.write(block)
        if digest.hexdigest() != f["sha256"]:  # changed between verify and copy
            raise BackupError(f"object {f['sha256']} changed while it was restored; run the restore again")
    for f in commits:
        dest = target.location.path(f["path"])
        wanted.add(dest)
        raw = backup.fs.cat_file(object_path(backup, f["sha256"]))
        target.location.write_atomic(dest, _reroot(raw, manifest["store_root"], target))
    stale = [p for p in existing if p not in wanted]
    if stale:
        target.fs.rm(stale)
    summary = build_catalog(target, catalog_path, backup=backup)
    return RestoreResult(
        day=day,
        store_url=target.location.url(),
        catalog_path=summary.path,
        files=len(manifest["files"]),
        bytes=manifest["totals"]["bytes"],
        episodes=summary.episode_versions,
        removed=len(stale),
        duration_s=round(time.perf_counter() - clock, 3),
    )


def _fingerprint(con: duckdb.DuckDBPyConnection, relation: str) -> tuple[int, str]:
    """Row count and an order-independent checksum over every column of every row."""
    rows, total = con.sql(
        f"SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0) FROM {relation} t"
    ).fetchall()[0]
    return int(rows), str(total)


def _live_fingerprints(store: EpisodeStore, manifest: dict[str, Any]) -> dict[str, tuple[int, str]] | None:
    """Fingerprints of the live store's files the snapshot names; None once any has been vacuumed."""
    result = {}
    with duckdb.connect() as con:
        store.location.register_with(con)
        for kind in ("episodes", "rejects"):
            paths = [store.location.path(f["path"]) for f in manifest["files"] if f["kind"] == kind]
            if not all(store.fs.exists(p) for p in paths):
                return None
            uris = [store.location.uri(p) for p in paths]
            result[kind] = (
                _fingerprint(con, f"read_parquet({uris!r}, hive_partitioning = false)") if uris else (0, "0")
            )
    return result


def prove(
    backup: Location, day: str, live: EpisodeStore, *, scratch: str | Path | None = None
) -> dict[str, Any]:
    """Restore ``day`` into scratch space and compare it with the live store; record the verdict.

    Compared: row counts of episodes and rejects against the manifest, and (while the live store
    still holds the snapshot's files) row counts and a checksum over every column against them.
    The verdict goes to ``snapshots/date=<day>/check.json``; it is returned either way.
    """
    manifest = read_manifest(backup, day)
    expected = {
        "episodes": manifest["totals"]["episode_rows"],
        "rejects": manifest["totals"]["reject_rows"],
    }
    verdict: dict[str, Any] = {"day": day, "checked_at": datetime.now(UTC).isoformat()}
    with scratch_space(scratch) as tmp:  # also removes what killed checks left
        try:
            restored = restore(backup, day, EpisodeStore.from_url(f"{tmp}/store"), f"{tmp}/catalog.duckdb")
            with connect(restored.catalog_path) as con:
                got = {"episodes": _fingerprint(con, "episode_log"), "rejects": _fingerprint(con, "rejects")}
        except Exception as exc:  # a snapshot that cannot be restored is the failure we report
            verdict.update(passed=False, error=str(exc))
        else:
            reference = _live_fingerprints(live, manifest)
            verdict.update(
                restored={k: {"rows": r, "checksum": c} for k, (r, c) in got.items()},
                expected_rows=expected,
                live={k: {"rows": r, "checksum": c} for k, (r, c) in reference.items()}
                if reference
                else None,
            )
            problems = [
                f"{k}: restored {got[k][0]} rows, the manifest lists {expected[k]}"
                for k in expected
                if got[k][0] != expected[k]
            ]
            if reference:
                problems += [
                    f"{k}: restored {got[k]} (rows, checksum) but the live store has {reference[k]}"
                    for k in reference
                    if reference[k] != got[k]
                ]
            verdict.update(passed=not problems, problems=problems)
    backup.write_atomic(check_path(backup, day), json.dumps(verdict, indent=1).encode())
    return verdict
