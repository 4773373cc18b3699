"""The landing sensor sees re-delivered dumps (issue 13, §2): a new dump is a run; the same dump at
the next tick is none; a dump overwritten with other bytes of the same size is a run again (a new
version of its partition); a partition whose file went away is named, not an error. Ticks run
against a real ephemeral Dagster instance, carrying the cursor from one tick to the next as the
daemon does, on local disk and on the S3-compatible test server."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pipelines.orchestration import sensors
from pipelines.orchestration.definitions import defs
from pipelines.orchestration.resources import EpisodeStoreResource, ImportSettings, LandingZone
from pipelines.orchestration.sensors import FINGERPRINT_TAG, RANGE_END_TAG, RANGE_START_TAG, REASON_TAG
from pipelines.store.episodes import EpisodeStore
from pipelines.store.ingest import dump_fingerprints, ingest_dump
from pipelines.store.locations import Location
from tests.conftest import put
from tests.test_store import mem0_dump


class Daemon:
    """What the sensor daemon does between ticks: apply partition requests, keep the cursor."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor: str | None = None
        self.resources = {
            "landing": LandingZone(url=f"{backend}/landing"),
            "episode_store": EpisodeStoreResource(
                url=f"{backend}/store", catalog_path=str(tmp_path / "episodes.duckdb")
            ),
            "import_settings": ImportSettings(tenant_id="acme"),
        }
        self.sensor = defs.resolve_sensor_def("landing_sensor")

    def tick(self) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources
        )
        result: Any = self.sensor(context)
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        self.cursor = result.cursor
        return result


def _runs(result: dg.SensorResult) -> list[tuple[str, str | None, str]]:
    return [(r.job_name or "", r.partition_key, r.tags[REASON_TAG]) for r in result.run_requests or []]


def _overwrite_same_size(landing: Location, relpath: str, data: str) -> None:
    """Other bytes, the same length, and a later modification time (as a re-delivery has)."""
    old = landing.fs.cat_file(landing.path(relpath))
    new = data.encode("utf-8")
    assert len(new) == len(old) and new != old
    put(landing, relpath, new)
    if landing.is_local:  # a same-second rewrite on a coarse clock: still seen (the inode is kept)
        later = Path(landing.path(relpath)).stat().st_mtime + 5
        os.utime(landing.path(relpath), (later, later))


def test_new_unchanged_overwritten_and_deleted_dumps(backend: str, tmp_path: Path) -> None:
    landing = Location.from_url(f"{backend}/landing")
    put(landing, "mem0/a.json", mem0_dump(3, text="fact"))
    daemon = Daemon(backend, tmp_path)

    first = daemon.tick()
    assert _runs(first) == [("ingest_mem0", "a.json", "new")]
    assert daemon.instance.get_dynamic_partitions("mem0_dumps") == ["a.json"]

    again = daemon.tick()
    assert _runs(again) == []
    assert again.skip_reason is not None and again.skip_reason.skip_message == "No new or changed dump."

    _overwrite_same_size(landing, "mem0/a.json", mem0_dump(3, text="FACT"))
    changed = daemon.tick()
    assert _runs(changed) == [("ingest_mem0", "a.json", "changed")]
    (request,) = changed.run_requests or []
    (earlier,) = first.run_requests or []
    assert request.run_key != earlier.run_key  # Dagster would drop a request with a used run_key
    assert "bytes, modified" in request.tags[FINGERPRINT_TAG]
    assert _runs(daemon.tick()) == []  # seen once: not again

    landing.fs.rm(landing.path("mem0/a.json"))
    gone = daemon.tick()
    assert _runs(gone) == []
    assert gone.skip_reason is not None
    assert "1 partition(s) have no file: 'mem0/a.json'" in gone.skip_reason.skip_message
    # still named at the next tick (the warning in the sensor's log is written once)
    assert "'mem0/a.json'" in (daemon.tick().skip_reason.skip_message or "")  # type: ignore[union-attr]

    put(landing, "mem0/a.json", mem0_dump(3, text="back"))  # delivered again
    assert _runs(daemon.tick()) == [("ingest_mem0", "a.json", "not imported as it is")]


def test_a_partition_added_before_its_file_is_ingested_when_the_file_comes(
    backend: str, tmp_path: Path
) -> None:
    landing = Location.from_url(f"{backend}/landing")
    daemon = Daemon(backend, tmp_path)
    daemon.instance.add_dynamic_partitions("zep_dumps", ["typo.json"])
    early = daemon.tick()
    assert _runs(early) == []
    assert "zep/typo.json" in (early.skip_reason.skip_message if early.skip_reason else "")
    put(landing, "zep/typo.json", "[]")
    assert _runs(daemon.tick()) == [("ingest_zep", "typo.json", "not imported as it is")]


def test_without_a_cursor_dumps_the_store_holds_as_they_are_are_not_run_again(tmp_path: Path) -> None:
    """``memport run`` ingested them, or the cursor was lost: the store's live import decides."""
    backend = str(tmp_path / "base")
    landing = Location.from_url(f"{backend}/landing")
    store = EpisodeStore.from_url(f"{backend}/store")
    for name in ("same.json", "edited.json"):
        put(landing, f"mem0/{name}", mem0_dump(4))
        old = time.time() - 60
        os.utime(landing.path("mem0", name), (old, old))
        assert not ingest_dump(store, landing, "mem0", name, tenant_id="acme").skipped
    daemon = Daemon(backend, tmp_path)
    daemon.instance.add_dynamic_partitions("mem0_dumps", ["same.json", "edited.json"])
    put(landing, "mem0/edited.json", mem0_dump(5))  # changed after its import
    assert _runs(daemon.tick()) == [("ingest_mem0", "edited.json", "not imported as it is")]
    assert _runs(daemon.tick()) == []
    # another tenant's import is not this tenant's: its dumps are ingested for this one
    daemon.resources["import_settings"] = ImportSettings(tenant_id="other")
    daemon.cursor = None
    assert _covered(daemon, daemon.tick()) == ["same.json", "edited.json"]


def _covered(daemon: Daemon, result: dg.SensorResult) -> list[str]:
    """The partitions the tick's runs cover, in order (a ranged run covers start..end)."""
    keys: list[str] = []
    for request in result.run_requests or []:
        if request.partition_key:
            keys.append(request.partition_key)
            continue
        order = daemon.instance.get_dynamic_partitions(f"{request.job_name.removeprefix('ingest_')}_dumps")
        start, end = order.index(request.tags[RANGE_START_TAG]), order.index(request.tags[RANGE_END_TAG])
        keys += order[start : end + 1]
    return keys


def test_dumps_arriving_together_are_ingested_in_ranged_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five new dumps at once, two a run: three runs covering exactly the five, which really run
    (a run over a partition key range, as the daemon launches it) and materialize each dump."""
    monkeypatch.setattr(sensors, "MAX_DUMPS_PER_RUN", 2)
    backend = str(tmp_path / "base")
    landing = Location.from_url(f"{backend}/landing")
    put(landing, "mem0/old.json", mem0_dump(2))
    daemon = Daemon(backend, tmp_path)
    assert _runs(daemon.tick()) == [("ingest_mem0", "old.json", "new")]
    names = [f"d{i}.json" for i in range(5)]
    for i, name in enumerate(names):
        put(landing, f"mem0/{name}", mem0_dump(3, text=f"dump {i}"))
    result = daemon.tick()
    requests = result.run_requests or []
    assert len(requests) == 3 and _covered(daemon, result) == names  # old.json is not run again
    assert [r.partition_key for r in requests] == [None, None, "d4.json"]
    assert len({r.run_key for r in requests}) == 3
    job = defs.resolve_job_def("ingest_mem0")
    for request in requests:
        run = job.execute_in_process(
            instance=daemon.instance,
            tags=request.tags,
            partition_key=request.partition_key,
            resources=daemon.resources,
        )
        assert run.success
    done = daemon.instance.get_materialized_partitions(dg.AssetKey("mem0_episodes"))
    assert set(names) <= done
    store = EpisodeStore.from_url(f"{backend}/store")
    assert {m["dump_key"] for live, m in store.manifests() if live} >= set(names)


def test_fingerprints_change_with_same_size_content_on_every_filesystem(backend: str) -> None:
    """S3 gives an ETag (the same-second rewrite differs by it); memory keeps a creation time."""
    for url in (f"{backend}/landing", f"memory://{os.urandom(4).hex()}/landing"):
        landing = Location.from_url(url)
        put(landing, "mem0/a.json", "[1]")
        before = dump_fingerprints(landing, "mem0")["a.json"]
        assert before.size == 3 and before.modified is not None
        assert dump_fingerprints(landing, "mem0")["a.json"] == before  # stable while untouched
        time.sleep(0.01)
        put(landing, "mem0/a.json", "[2]")
        if landing.is_local:
            os.utime(landing.path("mem0/a.json"), (before.modified + 2, before.modified + 2))
        after = dump_fingerprints(landing, "mem0")["a.json"]
        assert after.size == 3 and after.digest() != before.digest()
        if url.startswith("s3://"):
            assert "ETag" in after.tag and after.tag != before.tag


@pytest.mark.parametrize("name", [".hidden.json", "upload.json.part", "_tmp/a.json"])
def test_files_that_are_not_dumps_yet_are_not_fingerprinted(tmp_path: Path, name: str) -> None:
    landing = Location.from_url(str(tmp_path / "landing"))
    put(landing, f"mem0/{name}", "[]")
    put(landing, "mem0/real.json", "[]")
    assert list(dump_fingerprints(landing, "mem0")) == ["real.json"]


def test_a_dangling_link_is_no_dump_and_does_not_break_the_tick(tmp_path: Path) -> None:
    landing = Location.from_url(str(tmp_path / "landing"))
    put(landing, "mem0/real.json", "[]")
    Path(landing.path("mem0", "gone.json")).symlink_to(tmp_path / "landing" / "mem0" / "nowhere.json")
    assert list(dump_fingerprints(landing, "mem0")) == ["real.json"]
