"""A restore killed (SIGKILL, real child process) at any instant leaves the target store valid.

The target is the live store itself, as an operator would do it (`memport restore --day latest
--overwrite`): since the snapshot one dump was re-imported (and the old version vacuumed, so the
restore must write those files back) and one new dump was imported (so the restore must remove
it); two other partitions are unchanged. After each kill every live manifest must name whole files
with known-good content, each partition's live manifest must be its old or its restored one, the
catalog must build and read; then re-running the restore must finish and give the snapshot.
"""

from __future__ import annotations

import base64
import json
import os
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import pipelines.store.episodes as episodes_module
from pipelines.backups.restore import restore
from pipelines.backups.snapshot import read_manifest, take_snapshot
from pipelines.store.catalog import build_catalog
from pipelines.store.episodes import EpisodeStore
from pipelines.store.locations import Location
from tests.conftest import FIXTURES, put
from tests.restore_crash import (
    ChildRun,
    clone_store,
    live_manifests,
    restore_killed,
    sha256_of,
    store_state_problems,
)
from tests.test_store import ingest

TODAY = datetime.now(UTC).date().isoformat()


def bulky_mem0(n: int, seed: str) -> str:
    """Mem0 records with ~2 KB of incompressible text each: parts of a few MB take time to write."""
    rng = random.Random(seed)
    return json.dumps(
        [
            {
                "id": f"m-{i}",
                "memory": base64.b64encode(rng.randbytes(1500)).decode(),
                "user_id": "u",
                "created_at": f"2025-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
            }
            for i in range(n)
        ]
    )


@dataclass(frozen=True)
class Scenario:
    live: Path
    backup: str
    allowed_live: dict[str, set[str | None]]
    good_sha: dict[str, set[str]]
    snapshot_live: dict[str, str]
    episodes: int


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    base = tmp_path_factory.mktemp("restore-crash")
    landing = Location.from_url(str(base / "landing"))
    store = EpisodeStore.from_url(str(base / "live"))
    backup = Location.from_url(str(base / "backups"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(episodes_module, "PART_ROWS", 1000)  # several parts per partition
        put(landing, "mem0/a.json", bulky_mem0(2000, "a1"))
        put(landing, "mem0/b.json", bulky_mem0(3000, "b"))
        put(landing, "cortexdb/c.jsonl", (FIXTURES / "cortexdb" / "export_and_import.jsonl").read_bytes())
        for system, rel in (("mem0", "a.json"), ("mem0", "b.json"), ("cortexdb", "c.jsonl")):
            ingest(store, landing, system, rel)
        snap = take_snapshot(store, backup, TODAY)
        put(landing, "mem0/a.json", bulky_mem0(1500, "a2"))  # a new version of a.json
        put(landing, "mem0/d.json", bulky_mem0(500, "d"))  # a dump the snapshot does not have
        ingest(store, landing, "mem0", "a.json")
        ingest(store, landing, "mem0", "d.json")
    store.vacuum(grace=timedelta(0))  # a.json's snapshot version is gone from the live store
    root = store.location.root + "/"
    good: dict[str, set[str]] = {}
    for f in read_manifest(backup, TODAY)["files"]:
        good.setdefault(f["path"], set()).add(f["sha256"])
    for path in store.fs.find(store.location.path("episodes")) + store.fs.find(
        store.location.path("rejects")
    ):
        good.setdefault(path.removeprefix(root), set()).add(sha256_of(path))
    before = live_manifests(store)
    after: dict[str, str] = {}
    for f in sorted(read_manifest(backup, TODAY)["files"], key=lambda f: f["path"]):
        if f["kind"] == "import-manifest":
            after[f["path"].rsplit("/", 1)[0]] = f["path"]
    assert before != after and set(before) - set(after)  # the restore has work to do
    allowed = {p: {before.get(p), after.get(p)} for p in set(before) | set(after)}
    return Scenario(base / "live", backup.url(), allowed, good, after, snap.rows)


@pytest.fixture(scope="module")
def full_run(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> ChildRun:
    """One restore left to finish: how many changes it makes, and that its result is right."""
    work = tmp_path_factory.mktemp("restore-full")
    run = _trial(scenario, work, kill_at=0)
    assert not run.killed and run.changes > 0
    assert live_manifests(EpisodeStore.from_url(str(work / "store"))) == scenario.snapshot_live
    return run


def _trial(scenario: Scenario, work: Path, *, kill_at: int, delay: float = 0.0) -> ChildRun:
    target, catalog = work / "store", work / "catalog.duckdb"
    clone_store(scenario.live, target)
    store = EpisodeStore.from_url(str(target))
    build_catalog(store, catalog)  # the catalog an analyst has open
    run = restore_killed(scenario.backup, "latest", target, catalog, kill_at=kill_at, delay=delay)
    problems = store_state_problems(
        store, catalog, work, allowed_live=scenario.allowed_live, good_sha=scenario.good_sha
    )
    assert not problems, f"killed at change {kill_at} (+{delay} s): " + "\n".join(problems)
    return run


#: (where in the restore, as a fraction of its changes; seconds after that change): 0 s kills
#: between two steps, a few ms kills inside a write or rename; the last two are timed from the
#: first change as a fraction of the whole restore's duration.
TRIALS = [(0.05, 0.0), (0.2, 0.002), (0.35, 0.0), (0.5, 0.002), (0.65, 0.0), (0.8, 0.002), (1.0, 0.0)]
TIMED = [0.3, 0.7]


@pytest.mark.parametrize(
    ("fraction", "delay", "timed"),
    [(f, d, False) for f, d in TRIALS] + [(0.0, t, True) for t in TIMED],
    ids=[f"change{f:.0%}+{d * 1000:g}ms" for f, d in TRIALS] + [f"timed{t:.0%}" for t in TIMED],
)
def test_restore_killed_leaves_a_valid_store_and_reruns(
    scenario: Scenario, full_run: ChildRun, tmp_path: Path, fraction: float, delay: float, timed: bool
) -> None:
    kill_at = max(1, round(fraction * full_run.changes))
    run = _trial(scenario, tmp_path, kill_at=kill_at, delay=delay * full_run.seconds if timed else delay)
    if not timed and delay == 0:
        assert run.killed  # a kill before a change always lands
    # re-running the restore finishes, and gives exactly the snapshot
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    result = restore(
        Location.from_url(scenario.backup), "latest", store, tmp_path / "catalog.duckdb", overwrite=True
    )
    assert result.episodes == scenario.episodes
    assert live_manifests(store) == scenario.snapshot_live
    assert not [p for p in store.fs.find(store.location.root) if ".tmp-" in p]
    assert not store_state_problems(
        store,
        tmp_path / "catalog.duckdb",
        tmp_path,
        allowed_live={p: {v} for p, v in scenario.snapshot_live.items()},
        good_sha=scenario.good_sha,
    )


@pytest.mark.slow
def test_restore_killed_at_random_instants(scenario: Scenario, full_run: ChildRun, tmp_path: Path) -> None:
    """The long run behind the figure in the README: N kills at random changes and delays."""
    rng = random.Random(20261126)
    broken = []
    trials = int(os.environ.get("MEMPORT_CRASH_TRIALS", "30"))
    for i in range(trials):
        work = tmp_path / f"t{i}"
        work.mkdir()
        kill_at = rng.randint(1, full_run.changes)
        delay = rng.choice([0.0, rng.uniform(0, 0.02), rng.uniform(0, full_run.seconds)])
        try:
            _trial(scenario, work, kill_at=kill_at, delay=delay)
        except AssertionError as exc:
            broken.append(str(exc).splitlines()[0][:300])
    print(f"{trials - len(broken)} of {trials} kills left a valid store")
    assert not broken, f"{len(broken)} of {trials} kills left the store broken:\n" + "\n".join(broken)
