"""Every way of ingesting refreshes the catalog once, under a real ``dagster dev`` (daemon, queued
runs, backfills launched through GraphQL as the UI does).

Three phases over N small Mem0 dumps: the landing sensor picks them up; an asset backfill (the
asset's page, the lineage view: ``launchPartitionBackfill`` with an asset selection); a job backfill
(the ``ingest_mem0`` job's page). Each prints how many catalog runs followed the phase's ingest runs
(target: exactly 1) and how long after the last ingest run the catalog was fresh.

    python -m tests.bench.catalog_refresh_bench [N]     (N=6 by default; about 5 minutes per phase
                                                        on a loaded 2-core machine)
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.orchestration.assets import MAX_DUMPS_PER_RUN
from tests.dagster_dev import REPO, REPOSITORY, DagsterDev

SETTLE_S = 100  # how long catalog runs are counted after a phase's last ingest run
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


def start(work: Path, n: int) -> DagsterDev:
    """``dagster dev`` over ``n`` Mem0 dumps in the landing zone, its landing sensor on."""
    (work / "landing" / "mem0").mkdir(parents=True)
    dump = (REPO / "tests" / "fixtures" / "mem0" / "paginated_v3.json").read_bytes()
    for i in range(n):
        (work / "landing" / "mem0" / f"d{i:03}.json").write_bytes(dump)
    return DagsterDev(work, stop_landing_sensor=False)


def is_catalog(run: dict[str, Any]) -> bool:
    selection = [a["path"] for a in run["assetSelection"] or []]
    return run["jobName"] == "refresh_catalog" or selection == [["episode_catalog"]]


def in_backfill(backfill_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda run: {"key": "dagster/backfill", "value": backfill_id} in run["tags"]


def phase(
    dev: DagsterDev, name: str, ingest: Callable[[dict[str, Any]], bool], n: int, seen: set[str]
) -> bool:
    """Wait for the phase's ingest runs (``n`` dumps, up to ``MAX_DUMPS_PER_RUN`` a run) to finish,
    then count the catalog runs that follow."""
    deadline, runs = time.time() + 1800, []
    while time.time() < deadline:
        runs = [r for r in dev.runs() if ingest(r)]
        if len(runs) >= math.ceil(n / MAX_DUMPS_PER_RUN) and all(r["status"] in FINISHED for r in runs):
            break
        time.sleep(3)
    last = max((r["endTime"] or 0.0 for r in runs), default=0.0)
    time.sleep(SETTLE_S)
    catalog = [r for r in dev.runs() if is_catalog(r) and r["runId"] not in seen]
    seen.update(r["runId"] for r in catalog)
    ends = [r["endTime"] for r in catalog if r["status"] == "SUCCESS" and r["endTime"]]
    fresh = f"{min(ends) - last:.0f} s" if ends else f"not within {SETTLE_S} s"
    ok = len(catalog) == 1
    print(
        f"{name:<15}: {len(runs)} ingest runs -> {len(catalog)} catalog run(s); catalog fresh {fresh} "
        f"after the last ingest run  {'PASS' if ok else 'FAIL'} (target: 1)",
        flush=True,
    )
    return ok


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    keys = [f"d{i:03}.json" for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="memport-catalog-refresh-") as tmp:
        dev = start(Path(tmp), n)
        seen: set[str] = set()
        try:
            ok = phase(dev, "landing sensor", lambda r: r["jobName"] == "ingest_mem0", n, seen)
            asset = dev.launch_backfill("mem0_episodes", keys)
            ok &= phase(dev, "asset backfill", in_backfill(asset), n, seen)
            job = dev.launch(
                {
                    "selector": {
                        "partitionSetName": "ingest_mem0_partition_set",
                        "repositorySelector": REPOSITORY,
                    },
                    "partitionNames": keys,
                }
            )
            ok &= phase(dev, "job backfill", in_backfill(job), n, seen)
        finally:
            dev.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
