"""A backfill launched through a real ``dagster dev``'s GraphQL API, as the asset's page launches it:
its dumps are ingested in one run (the ingest assets' BackfillPolicy), the good ones materialized,
the broken one failed and named; then the catalog shows the good ones.

One ``dagster dev`` and one backfill for the module. The daemon picks backfills up every 30 s and
the catalog's automation sensor ticks every 30 s (neither interval is configurable in Dagster 1.13),
so the backfill takes 40-55 s on a loaded 2-core machine and the catalog another ~30 s. Both tests
are in the default suite: they are what issue 13 asks of a backfill (every partition materialized,
the catalog showing it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.store.catalog import connect
from tests.conftest import FIXTURES
from tests.dagster_dev import DagsterDev

GOOD = ["a.json", "b.json", "sub/c.json"]
BROKEN = "broken.af"
KEYS = [*GOOD, BROKEN]


@dataclass
class Backfill:
    dev: DagsterDev
    backfill_id: str
    work: Path
    statuses: dict[str, list[str]]


@pytest.fixture(scope="module")
def backfill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backfill]:
    """Four dumps (one broken) backfilled through GraphQL; waits until every partition is done."""
    work = tmp_path_factory.mktemp("backfill")
    dev = DagsterDev(work)  # the landing sensor stopped: the backfill alone ingests
    try:
        mem0 = work / "landing" / "mem0"
        for key in GOOD:
            (mem0 / key).parent.mkdir(parents=True, exist_ok=True)
            (mem0 / key).write_bytes((FIXTURES / "mem0" / "paginated_v3.json").read_bytes())
        (mem0 / BROKEN).write_text('{\n  "agents": [],\n  "blocks": []\n}', encoding="utf-8")
        dev.add_partitions("mem0_dumps", KEYS)
        backfill_id = dev.launch_backfill("mem0_episodes", KEYS)
        deadline = time.monotonic() + 240
        statuses = dev.partition_statuses("mem0_episodes")
        while time.monotonic() < deadline:
            statuses = dev.partition_statuses("mem0_episodes")
            if set(statuses["materializedPartitions"]) | set(statuses["failedPartitions"]) >= set(KEYS):
                break
            time.sleep(1)
        yield Backfill(dev, backfill_id, work, statuses)
    finally:
        dev.stop()


def test_a_backfill_through_the_webserver_runs_its_dumps_together_and_names_the_broken_one(
    backfill: Backfill,
) -> None:
    statuses = backfill.statuses
    assert sorted(statuses["materializedPartitions"]) == sorted(GOOD), statuses
    assert statuses["failedPartitions"] == [BROKEN], statuses
    runs = backfill.dev.backfill(backfill.backfill_id)["runs"]
    assert len(runs) == 1, "four dumps, one run (BackfillPolicy: up to 50 dumps per run)"
    (failure,) = backfill.dev.step_failures(runs[0]["runId"])
    assert "1 of 4 dumps failed; the other 3 are committed and materialized" in failure
    assert "mem0/broken.af: DumpFormatError:" in failure and "not a Mem0 memory dump" in failure


def test_after_the_backfill_the_catalog_shows_its_dumps_refreshed_once(backfill: Backfill) -> None:
    catalog = backfill.work / "episodes.duckdb"
    deadline, dumps = time.monotonic() + 180, set[str]()
    while time.monotonic() < deadline and dumps != set(GOOD):
        if catalog.exists():
            with connect(catalog) as con:
                dumps = {d for (d,) in con.execute("SELECT dump FROM imports WHERE live").fetchall()}
        time.sleep(1)
    assert dumps == set(GOOD), "the catalog_automation sensor refreshed the catalog after the backfill"
    with connect(catalog) as con:
        assert con.execute("SELECT count(*) FROM episode_log").fetchone() == (6,)
    catalog_runs = [
        r
        for r in backfill.dev.runs()
        if [a["path"] for a in r["assetSelection"] or []] == [["episode_catalog"]]
    ]
    assert len(catalog_runs) == 1, catalog_runs
