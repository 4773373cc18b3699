"""Backups under an attacker or a damaged disk: edited manifests never reach outside their root, a
truncated manifest is named with what to do, a corrupt object is repaired by the next snapshot."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.errors import BackupError
from pipelines.backups.restore import prove, restore
from pipelines.backups.retention import prune
from pipelines.backups.snapshot import (
    existing_objects,
    manifest_path,
    object_path,
    read_manifest,
    snapshots_frame,
    take_snapshot,
)
from pipelines.cli import main as cli
from pipelines.store.catalog import build_catalog
from pipelines.store.episodes import EpisodeStore
from pipelines.store.locations import Location
from tests.conftest import put
from tests.test_backups import ingest_at
from tests.test_store import ingest, mem0_dump

TODAY = datetime.now(UTC).date().isoformat()
PRECIOUS = b"an analyst's file, outside the store"


@pytest.fixture
def backup(backend: str) -> Location:
    return Location.from_url(f"{backend}/backups")


def _edit_manifest(backup: Location, day: str, edit: object) -> None:
    path = manifest_path(backup, day)
    manifest = json.loads(backup.fs.cat_file(path))
    edit(manifest)  # type: ignore[operator]
    backup.fs.pipe_file(path, json.dumps(manifest).encode())


def _files(location: Location) -> dict[str, bytes]:
    if not location.fs.exists(location.root):
        return {}
    return {p: location.fs.cat_file(p) for p in location.fs.find(location.root)}


@pytest.fixture
def snapshotted(store: EpisodeStore, landing: Location, backup: Location, backend: str) -> dict[str, str]:
    """A store with one dump, its snapshot, a file outside the target to protect, a target in use."""
    put(landing, "mem0/a.json", mem0_dump(20))
    ingest(store, landing, "mem0", "a.json")
    take_snapshot(store, backup, TODAY)
    victim = Location.from_url(f"{backend}/victim.parquet")
    if victim.is_local:
        Path(victim.root).parent.mkdir(parents=True, exist_ok=True)
    victim.fs.pipe_file(victim.root, PRECIOUS)
    target = Location.from_url(f"{backend}/restored")
    put(target, "episodes/source_system=mem0/dump=x/part-keep.parquet", b"the target's own file")
    return {"victim": victim.root, "target": target.root}


ESCAPES = {
    "dotdot": "../victim.parquet",
    "dotdot-inside-kind": "episodes/../../victim.parquet",
    "absolute": "{victim}",
    "protocol": "file:///etc/passwd",
    "backslash": "episodes\\..\\..\\victim.parquet",
    "dot": "episodes/./x.parquet",
    "empty-segment": "episodes//x.parquet",
    "wrong-kind-folder": "catalog.duckdb",
    "newline": "episodes/x\n.parquet",
}


@pytest.mark.parametrize("escape", list(ESCAPES), ids=list(ESCAPES))
def test_manifest_paths_that_leave_the_root_are_refused_before_anything_is_touched(
    backup: Location, snapshotted: dict[str, str], tmp_path: Path, escape: str
) -> None:
    bad = ESCAPES[escape].format(victim=snapshotted["victim"])

    def edit(manifest: dict) -> None:
        next(f for f in manifest["files"] if f["kind"] == "episodes")["path"] = bad

    _edit_manifest(backup, TODAY, edit)
    target = EpisodeStore.from_url(snapshotted["target"])
    before, kept_objects = _files(target.location), dict(existing_objects(backup))
    with pytest.raises(BackupError) as caught:
        restore(backup, "latest", target, tmp_path / "r.duckdb", overwrite=True)
    message = str(caught.value)
    assert manifest_path(backup, TODAY).rsplit("/", 3)[1] in message and "nothing was changed" in message
    assert repr(bad) in message
    assert backup.fs.cat_file(snapshotted["victim"]) == PRECIOUS
    assert _files(target.location) == before and not (tmp_path / "r.duckdb").exists()
    with pytest.raises(BackupError, match="outside the store"):  # retention reads the same manifest
        prune(backup, keep_daily=5, keep_monthly=0)
    assert existing_objects(backup) == kept_objects


def test_an_object_name_that_is_a_path_is_refused(
    backup: Location, snapshotted: dict[str, str], tmp_path: Path
) -> None:
    def edit(manifest: dict) -> None:
        manifest["files"][0]["sha256"] = "../../../victim.parquet"

    _edit_manifest(backup, TODAY, edit)
    for act in (
        lambda: restore(
            backup, TODAY, EpisodeStore.from_url(snapshotted["target"]), tmp_path / "x.db", overwrite=True
        ),
        lambda: prune(backup, keep_daily=5, keep_monthly=0),
    ):
        with pytest.raises(BackupError, match="is not a sha256"):
            act()
    assert backup.fs.cat_file(snapshotted["victim"]) == PRECIOUS


def test_an_import_manifest_inside_the_backup_cannot_lead_out_either(
    backup: Location, snapshotted: dict[str, str], tmp_path: Path
) -> None:
    """The store's own manifests are backed up too; their file paths are re-rooted, then checked."""
    snap = read_manifest(backup, TODAY)
    entry = next(f for f in snap["files"] if f["kind"] == "import-manifest")
    inner = json.loads(backup.fs.cat_file(object_path(backup, entry["sha256"])))
    inner["files"]["episodes"][0]["path"] = snap["store_root"] + "/episodes/../../victim.parquet"
    data = json.dumps(inner).encode()
    sha = hashlib.sha256(data).hexdigest()
    backup.write_atomic(object_path(backup, sha), data)

    def edit(manifest: dict) -> None:
        f = next(f for f in manifest["files"] if f["kind"] == "import-manifest")
        f.update(sha256=sha, bytes=len(data))

    _edit_manifest(backup, TODAY, edit)
    target = EpisodeStore.from_url(snapshotted["target"])
    before = _files(target.location)
    with pytest.raises(BackupError, match=r"'\.\.' segment.*nothing was changed"):
        restore(backup, TODAY, target, tmp_path / "r.duckdb", overwrite=True)
    assert _files(target.location) == before
    assert backup.fs.cat_file(snapshotted["victim"]) == PRECIOUS


def test_a_truncated_manifest_is_named_with_what_to_do(
    store: EpisodeStore, landing: Location, backup: Location, backend: str, tmp_path: Path
) -> None:
    put(landing, "mem0/a.json", mem0_dump(10))
    ingest_at(store, landing, "mem0", "a.json", "2025-03-01T10:00:00+00:00")
    take_snapshot(store, backup, "2025-03-01")
    take_snapshot(store, backup, TODAY)
    path = manifest_path(backup, TODAY)
    whole = backup.fs.cat_file(path)
    backup.fs.pipe_file(path, whole[: len(whole) // 2])
    target = EpisodeStore.from_url(f"{backend}/restored")
    for day in ("latest", TODAY):
        with pytest.raises(BackupError) as caught:
            restore(backup, day, target, tmp_path / "r.duckdb")
        message = str(caught.value)
        assert backup.uri(path) in message and "damaged" in message and "truncated" in message
        assert "--day <day>" in message and "2025-03-01" in message and f"--day {TODAY}" in message
    # the rest of the backups keep working around it
    assert restore(backup, "2025-03-01", target, tmp_path / "r.duckdb").episodes == 10
    listed = snapshots_frame(backup)
    assert listed.filter(check_passed=False)["day"].cast(str).to_list() == [TODAY]
    build_catalog(store, tmp_path / "c.duckdb", backup=backup)
    with pytest.raises(BackupError, match="damaged"):  # retention cannot tell what it names: no deletes
        prune(backup, keep_daily=1, keep_monthly=0)
    assert snapshots_frame(backup).height == 2
    take_snapshot(store, backup, TODAY)  # taking the day again repairs it
    assert restore(backup, "latest", target, tmp_path / "r.duckdb", overwrite=True).day == TODAY


def test_a_corrupt_object_is_copied_again_once_the_restore_check_failed(
    store: EpisodeStore, landing: Location, backup: Location, backend: str, tmp_path: Path
) -> None:
    put(landing, "mem0/a.json", mem0_dump(20))
    ingest(store, landing, "mem0", "a.json")
    now = datetime.now(UTC)
    days = [(now + timedelta(days=i), (now + timedelta(days=i)).date().isoformat()) for i in range(4)]
    take_snapshot(store, backup, days[0][1], now=days[0][0])
    assert prove(backup, days[0][1], store, scratch=tmp_path)["passed"]
    victim = next(f for f in read_manifest(backup, days[0][1])["files"] if f["kind"] == "episodes")
    obj = object_path(backup, victim["sha256"])
    data = bytearray(backup.fs.cat_file(obj))
    data[len(data) // 2] ^= 0x01  # one bit flips on the backup disk
    backup.fs.pipe_file(obj, bytes(data))

    # the newest check passed: reused objects are trusted by name and size (no-change costs no reads)
    trusted = take_snapshot(store, backup, days[1][1], now=days[1][0])
    assert (trusted.copied_files, trusted.verified_bytes) == (0, 0)
    verdict = prove(backup, days[1][1], store, scratch=tmp_path)
    assert verdict["passed"] is False and victim["sha256"] in verdict["error"]

    # the newest check failed: the next snapshot hashes what it reuses and copies the bad one again
    repaired = take_snapshot(store, backup, days[2][1], now=days[2][0])
    assert repaired.verified_bytes == repaired.bytes
    assert (repaired.copied_files, repaired.copied_bytes) == (1, victim["bytes"])
    assert hashlib.sha256(backup.fs.cat_file(obj)).hexdigest() == victim["sha256"]
    for day in (days[0][1], days[1][1], days[2][1]):  # every snapshot naming it restores again
        assert prove(backup, day, store, scratch=tmp_path)["passed"]
    calm = take_snapshot(store, backup, days[3][1], now=days[3][0])
    assert (calm.copied_files, calm.verified_bytes) == (0, 0)


def test_restore_latest_says_which_day(
    store: EpisodeStore,
    landing: Location,
    backup: Location,
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    put(landing, "mem0/a.json", mem0_dump(5))
    ingest(store, landing, "mem0", "a.json")
    take_snapshot(store, backup, TODAY)
    monkeypatch.chdir(tmp_path)
    args = [
        "restore",
        "--backup",
        backup.url(),
        "--store",
        f"{backend}/r",
        "--catalog",
        str(tmp_path / "r.db"),
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"restoring snapshot {TODAY} (the latest) from {backup.url()}")
    assert cli.main([*args, "--day", "2025-02-30"]) == 2
    assert "'2025-02-30' is not a day" in capsys.readouterr().err


def test_restore_leaves_files_that_already_hold_the_right_bytes_alone(
    store: EpisodeStore, landing: Location, backup: Location, backend: str, tmp_path: Path
) -> None:
    put(landing, "mem0/a.json", mem0_dump(30))
    ingest(store, landing, "mem0", "a.json")
    take_snapshot(store, backup, TODAY)
    target = EpisodeStore.from_url(f"{backend}/restored")
    first = restore(backup, TODAY, target, tmp_path / "r.duckdb")
    assert (first.written, first.unchanged) == (first.files, 0)
    victim = next(p for p in target.fs.find(target.location.path("episodes")))
    target.fs.pipe_file(victim, b"PAR1 damaged on the target")  # one file of the target is damaged
    again = restore(backup, TODAY, target, tmp_path / "r.duckdb", overwrite=True)
    assert (again.written, again.unchanged, again.removed) == (1, first.files - 1, 0)
    assert again.episodes == first.episodes == 30
    onto_live = restore(backup, "latest", store, tmp_path / "live.duckdb", overwrite=True)
    assert (onto_live.written, onto_live.removed) == (0, 0)
