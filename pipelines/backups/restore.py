"""Restore a snapshot into a store (verified first), and prove a snapshot restorable.

Restore reads the snapshot manifest (every path and sha256 in it checked, see
:mod:`pipelines.backups.manifests`) and every object it names, checking each sha256, *before* it
touches the target; a damaged manifest or a missing or corrupt object stops it with a message
naming it. Then, so that a restore killed at any instant leaves a valid store (each partition
old or new, never a committed manifest naming a partial file):

1. data files: a file already holding the right bytes is left alone; any other is written under
   a temporary name and renamed into place (:func:`pipelines.backups.transfer.copy_whole`);
2. import manifests (the store's commits), each whole and atomic, newest first per partition, so
   an older one never becomes live before the partition's restored live one exists;
3. the target's manifests the snapshot does not have are removed, history first and each
   partition's live one last, which makes the restored one live;
4. the catalog is rebuilt (it names only files that exist), and only then are the data files no
   manifest commits removed, so an open catalog never loses a file before it is replaced.

Import manifests name their files by absolute path; restore re-roots those paths to the target
store (the backed-up bytes are verified, the written manifest differs from them only in that root).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from connectors.errors import BackupError
from connectors.kit.sql import duckdb_connect, quote_list
from pipelines.backups.manifests import inside
from pipelines.backups.scratch import scratch_space
from pipelines.backups.snapshot import (
    check_path,
    existing_objects,
    manifest_path,
    object_path,
    parse_day,
    read_manifest,
    snapshot_days,
)
from pipelines.backups.transfer import copy_whole, hash_file, same_content
from pipelines.store.catalog import build_catalog, connect
from pipelines.store.episodes import EpisodeStore, live_flags
from pipelines.store.locations import Location

STORE_KINDS = ("episodes", "rejects", "imports")


def resolve_day(backup: Location, day: str) -> str:
    """``day`` itself once checked to be a day, or the newest day with a snapshot for ``latest``."""
    if day != "latest":
        return parse_day(day).isoformat()
    days = snapshot_days(backup)
    if not days:
        raise BackupError(f"no snapshot under {backup.url()}; take one with `memport snapshot`")
    return days[-1]


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
        elif (actual := hash_file(backup.fs, obj)) != f["sha256"]:
            problems.append(f"{where} is corrupt: its sha256 is {actual}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise BackupError(
            f"snapshot {manifest['day']} cannot be restored, nothing was changed: "
            + "; ".join(problems[:5])
            + more
            + ". The next snapshot copies a damaged object again from the store while the store "
            "still holds the file (`memport snapshot`); else restore another day"
        )


def _target_files(target: EpisodeStore) -> list[str]:
    found: list[str] = []
    for kind in STORE_KINDS:
        base = target.location.path(kind)
        if target.fs.exists(base):
            found += target.fs.find(base)
    return found


def _reroot(data: bytes, old_root: str, target: EpisodeStore, where: str) -> tuple[bytes, dict[str, Any]]:
    """The import manifest re-rooted to ``target``: its bytes and its content."""
    try:
        manifest = json.loads(data)
        named = [
            (kind, i, f) for kind in ("episodes", "rejects") for i, f in enumerate(manifest["files"][kind])
        ]
        paths = [f["path"] for _, _, f in named]
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(
            f"{where} is not a readable import manifest ({exc!r}); restore another day"
        ) from None
    for (kind, i, f), path in zip(named, paths, strict=True):
        at = f"{where}, files.{kind}[{i}]"
        if not isinstance(path, str) or not path.startswith(old_root + "/"):
            raise BackupError(
                f"{at}: {path!r} is not under the snapshot's store root {old_root}; nothing was "
                "changed. The backup was edited or damaged: restore another day"
            )
        f["path"] = inside(target.location, path[len(old_root) + 1 :], where=at, under=kind)
    return json.dumps(manifest, indent=2).encode(), manifest


@dataclass(frozen=True)
class _Plan:
    data: list[tuple[dict[str, Any], str]]  # snapshot entry, destination
    commits: list[tuple[str, bytes]]  # destination, re-rooted import manifest; newest first


def _plan(backup: Location, manifest: dict[str, Any], target: EpisodeStore, where: str) -> _Plan:
    """Every destination, checked, and every import manifest re-rooted, before anything is written."""
    data: list[tuple[dict[str, Any], str]] = []
    commits: list[tuple[str, bytes]] = []
    entries: list[tuple[str, dict[str, Any]]] = []
    for i, f in enumerate(manifest["files"]):
        at = f"{where}, files[{i}]"
        dest = inside(target.location, f["path"], where=at)
        if f["kind"] != "import-manifest":
            data.append((f, dest))
            continue
        raw = backup.fs.cat_file(object_path(backup, f["sha256"]))
        body, committed = _reroot(
            raw, manifest["store_root"], target, f"import manifest {f['path']} in {where}"
        )
        commits.append((dest, body))
        entries.append((dest, committed))
    restored = {dest for _, dest in data}
    for (dest, committed), live in zip(entries, live_flags(entries), strict=True):
        named = [f["path"] for kind in ("episodes", "rejects") for f in committed["files"][kind]]
        if live and (missing := [p for p in named if p not in restored]):
            raise BackupError(
                f"{where} is inconsistent: the import manifest {dest} names {missing[0]}, which the "
                "snapshot does not hold; nothing was changed. Restore another day"
            )
    return _Plan(data, sorted(commits, reverse=True))


def _uncommit(target: EpisodeStore, stale: list[str]) -> None:
    """Remove stale import manifests: history first, then the live ones (the store's rule,
    :func:`pipelines.store.episodes.live_flags`), so no older import becomes live on the way."""
    paths = sorted(target.fs.glob(target.location.path("imports", "*", "*", "*.json")))
    raw: dict[str, bytes] = target.fs.cat(paths) if paths else {}
    entries = [(p, json.loads(raw[p])) for p in paths]
    live = {p for (p, _), flag in zip(entries, live_flags(entries), strict=True) if flag}
    doomed = set(stale)
    history = [p for p in stale if p not in live]
    current = [p for p in paths if p in live and p in doomed]
    for batch in (history, current):
        if batch:
            target.fs.rm(batch)


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
    written: int = 0  # files written; the others already held the right bytes
    unchanged: int = 0


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
    where = f"snapshot manifest {backup.uri(manifest_path(backup, day))}"
    existing = _target_files(target)
    if existing and not overwrite:
        raise BackupError(
            f"the target store {target.location.url()} is not empty ({len(existing)} files, e.g. "
            f"{existing[0]}); restore into an empty location, or pass overwrite to replace it"
        )
    verify(backup, manifest)
    plan = _plan(backup, manifest, target, where)
    written = 0
    for f, dest in plan.data:
        if not same_content(target.location, dest, f["bytes"], f["sha256"]):
            copy_whole(backup.fs, object_path(backup, f["sha256"]), target.location, dest, f["sha256"])
            written += 1
    for dest, body in plan.commits:
        if not (target.fs.exists(dest) and target.fs.cat_file(dest) == body):
            target.location.write_atomic(dest, body)
            written += 1
    wanted = {dest for _, dest in plan.data} | {dest for dest, _ in plan.commits}
    stale = [p for p in existing if p not in wanted]
    commits = set(target.fs.glob(target.location.path("imports", "*", "*", "*.json")))
    _uncommit(target, [p for p in stale if p in commits])
    summary = build_catalog(target, catalog_path, backup=backup, rebuild=True)
    if leftovers := [p for p in stale if p not in commits]:
        target.fs.rm(leftovers)
    return RestoreResult(
        day=day,
        store_url=target.location.url(),
        catalog_path=summary.path,
        files=len(manifest["files"]),
        bytes=manifest["totals"]["bytes"],
        episodes=summary.episode_versions,
        removed=len(stale),
        duration_s=round(time.perf_counter() - clock, 3),
        written=written,
        unchanged=len(manifest["files"]) - written,
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
    with duckdb_connect() as con:
        store.location.register_with(con)
        for kind in ("episodes", "rejects"):
            paths = [store.location.path(f["path"]) for f in manifest["files"] if f["kind"] == kind]
            if not all(store.fs.exists(p) for p in paths):
                return None
            uris = [store.location.uri(p) for p in paths]
            result[kind] = (
                _fingerprint(con, f"read_parquet({quote_list(uris)}, hive_partitioning = false)")
                if uris
                else (0, "0")
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
