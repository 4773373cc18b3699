"""``memport run`` ingests each system's dumps in runs of up to ``MAX_DUMPS_PER_RUN`` partitions (a
partition key range, as a backfill does), still one line per dump, one commit per dump, a broken
dump costing only itself; and it builds the catalog once."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import dagster as dg
import pytest

from pipelines.cli.main import main
from pipelines.orchestration.partitions import key_ranges
from tests.bench.backfill_bench import write_dumps


@pytest.fixture
def env(memport_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr("pipelines.orchestration.assets.MAX_DUMPS_PER_RUN", 3)
    return memport_env


def _runs(home: Path, job: str) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return list(instance.get_runs(filters=dg.RunsFilter(job_name=job)))


def test_dumps_run_in_ranges_a_broken_one_costs_only_itself(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = write_dumps(env / "landing", 7, 4)
    with zipfile.ZipFile(env / "landing" / "mem0" / "dump-0003.zip", "w") as z:  # among the good ones
        z.writestr("notes.txt", "not an OpenMemory backup")

    assert main(["run", "--system", "mem0"]) == 1
    out = capsys.readouterr().out
    for key in keys:  # a line per dump, each with its counts
        assert f"ingest mem0/{key} … 4 accepted, 0 rejected, 0 duplicate" in out, out
    assert "ingest mem0/dump-0003.zip … FAILED: DumpFormatError:" in out
    assert "a zip archive with: notes.txt" in out
    failed = out[out.index("These failed:") :]
    assert f"{env / 'landing' / 'mem0' / 'dump-0003.zip'}: DumpFormatError:" in failed
    assert all(key not in failed for key in keys), "only the broken dump is named"
    manifests = list((env / "store" / "imports").rglob("2*.json"))
    assert len(manifests) == len(keys), "every good dump committed"

    runs = _runs(env / "dagster", "ingest_mem0")
    assert len(runs) == math.ceil(8 / 3), [r.tags for r in runs]
    ranged = [r for r in runs if "dagster/asset_partition_range_start" in r.tags]
    assert len(ranged) == len(runs)
    assert len(_runs(env / "dagster", "refresh_catalog")) == 1, "the catalog is built once"

    assert main(["run", "--system", "mem0"]) == 1  # again: the good ones skipped, the broken one fails
    out = capsys.readouterr().out
    for key in keys:
        assert f"ingest mem0/{key} … unchanged since import" in out
    assert "ingest mem0/dump-0003.zip … FAILED: DumpFormatError:" in out
    assert f"skipped       : {len(keys)} dump(s) unchanged" in out


def test_ranges_cover_exactly_the_dumps_meant() -> None:
    # Dagster orders a dynamic partition set by when keys were added: a key not to run (its file is
    # gone) ends a range, so no range's start..end takes it in.
    ordered = ["b", "a", "gone", "c", "d", "e", "f", "g"]
    wanted = ["a", "b", "c", "d", "e", "f", "g", "new-not-a-partition"]
    assert key_ranges(ordered, wanted, 3) == [["b", "a"], ["c", "d", "e"], ["f", "g"]]
    assert key_ranges(ordered, ["gone"], 3) == [["gone"]]
    assert key_ranges(ordered, [], 3) == []
    assert key_ranges(["a", "b", "c"], ["a", "b", "c"], 1) == [["a"], ["b"], ["c"]]


def test_run_builds_the_catalog_once(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingest, the sample export specs and today's snapshot, then one catalog listing them all."""
    import pipelines.orchestration.assets as assets
    import pipelines.orchestration.exports as exports
    from pipelines.store.catalog import connect

    write_dumps(env / "landing", 2, 3)
    monkeypatch.setenv(
        "MEMPORT_EXPORT_SPECS", str(Path(__file__).parent.parent / "pipelines/exports/specs.yaml")
    )
    builds: list[str] = []

    def counted(module: object) -> None:
        real = module.build_catalog  # type: ignore[attr-defined]

        def build(*args: object, **kwargs: object) -> object:
            builds.append(module.__name__)  # type: ignore[attr-defined]
            return real(*args, **kwargs)

        monkeypatch.setattr(module, "build_catalog", build)

    counted(assets)
    counted(exports)
    assert main(["run", "--system", "mem0"]) == 0
    assert builds == ["pipelines.orchestration.assets"], "one build, by the catalog's own job"
    with connect(env / "episodes.duckdb") as con:
        listed = con.sql("SELECT count(*) FROM exports WHERE status = 'READY'").fetchall()[0][0]
        snapshots = con.sql("SELECT count(*) FROM snapshots").fetchall()[0][0]
    assert listed > 0 and snapshots == 1, "the one catalog lists the exports and the snapshot"


def test_partitions_added_out_of_order_and_a_gone_one(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Partitions added earlier in another order, one whose file is gone: each range covers only dumps
    that are there, each once (Dagster resolves a range in the partitions' own order)."""
    keys = write_dumps(env / "landing", 5, 2)
    (env / "dagster").mkdir()
    with dg.DagsterInstance.from_config(str(env / "dagster")) as instance:
        instance.add_dynamic_partitions("mem0_dumps", [keys[3], keys[1], "gone.json", keys[4], keys[0]])
    assert main(["run", "--system", "mem0"]) == 0
    out = capsys.readouterr().out
    for key in keys:
        assert out.count(f"ingest mem0/{key} … 2 accepted") == 1, out
    assert "gone.json" not in out
    assert len(list((env / "store" / "imports").rglob("2*.json"))) == len(keys)
    runs = _runs(env / "dagster", "ingest_mem0")
    # [3, 1] | gone | [4, 0, 2]: 2 and 4 (new) are added after the known ones
    spans = sorted(
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in runs
    )
    assert spans == sorted([(keys[3], keys[1]), (keys[4], keys[2])])
