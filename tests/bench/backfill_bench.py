"""A backfill of many small dumps through a real ``dagster dev`` against ``memport run`` on the same
dumps, in the same run: a backfill should pay for ingest, not for runs.

    python -m tests.bench.backfill_bench [N] [RECORDS]     (N=200 Mem0 JSON dumps of RECORDS=300)

1. ``memport run --system mem0`` over the N dumps, fresh store and instance: its wall time.
2. ``dagster dev`` (webserver + daemon on 127.0.0.1, its own DAGSTER_HOME with the project's
   dagster.yaml, fresh store): the N partitions added, a backfill of all of them launched through
   GraphQL (``launchPartitionBackfill``, as the asset's page does), polled until every partition is
   materialized. Target: at most 2x ``memport run``.
3. The ingest step alone, in-process, one run of all N partitions with 1 and with 2 workers (the
   ``workers`` run config): which is faster on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import memport_settings
from tests.dagster_dev import DagsterDev

TARGET = 2.0


def write_dumps(landing: Path, n: int, records: int) -> list[str]:
    folder = landing / "mem0"
    folder.mkdir(parents=True, exist_ok=True)
    keys = []
    for i in range(n):
        rows = [
            {
                "id": f"d{i}-m{j}",
                "memory": f"user {j % 17} prefers option {j} of dump {i}; noted during session {j % 5}",
                "user_id": f"u{j % 17}",
                "created_at": f"2025-{1 + j % 12:02}-{1 + j % 28:02}T10:{j % 60:02}:00Z",
            }
            for j in range(records)
        ]
        key = f"dump-{i:04}.json"
        (folder / key).write_text(json.dumps(rows), encoding="utf-8")
        keys.append(key)
    return keys


def memport_run(work: Path, landing: Path) -> float:
    work.mkdir(parents=True)
    env = os.environ | memport_settings(work) | {"MEMPORT_LANDING_URL": str(landing)}
    memport = Path(sys.executable).parent / "memport"
    started = time.perf_counter()
    out = subprocess.run(
        [str(memport), "run", "--system", "mem0"], cwd=work, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"memport run failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    return wall


def backfill(work: Path, landing: Path, keys: list[str]) -> tuple[float, int, str]:
    """Wall time from the launch until every partition is materialized; runs; backfill status."""
    dev = DagsterDev(work)  # the landing sensor stopped before any dump arrives: the backfill ingests
    try:
        # the same dumps (a linked folder would be refused: it leads out of the landing zone)
        shutil.copytree(landing, work / "landing", dirs_exist_ok=True)
        dev.add_partitions("mem0_dumps", keys)
        started = time.perf_counter()
        backfill_id = dev.launch_backfill("mem0_episodes", keys)
        deadline = time.monotonic() + 3600
        done = []
        while time.monotonic() < deadline:
            statuses = dev.partition_statuses("mem0_episodes")
            done = statuses["materializedPartitions"]
            if len(done) + len(statuses["failedPartitions"]) >= len(keys):
                break
            time.sleep(1)
        wall = time.perf_counter() - started
        if set(done) != set(keys):
            raise RuntimeError(f"not every partition materialized: {len(done)} of {len(keys)}")
        final = dev.wait_for_backfill(backfill_id, timeout=120)
        return wall, len(final["runs"]), str(final["status"])
    finally:
        dev.stop()


def in_process(work: Path, landing: Path, keys: list[str], workers: int) -> float:
    """The ingest step alone: one run of every partition, ``workers`` dumps at a time."""
    import dagster as dg

    from pipelines.orchestration.assets import INGEST_ASSETS, ingest_asset_key
    from pipelines.orchestration.resources import EpisodeStoreResource, ImportSettings, LandingZone

    key = ingest_asset_key("mem0")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("mem0_dumps", keys)
    started = time.perf_counter()
    result = dg.materialize(
        [a for a in INGEST_ASSETS if a.key == key],
        instance=instance,
        resources={
            "landing": LandingZone(url=str(landing)),
            "episode_store": EpisodeStoreResource(
                url=str(work / "store"), catalog_path=str(work / "c.duckdb")
            ),
            "import_settings": ImportSettings(tenant_id="default"),
        },
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
        run_config={
            "ops": {key.to_python_identifier(): {"config": {"workers": workers}}},
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        },
    )
    assert result.success
    return time.perf_counter() - started


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    records = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    with tempfile.TemporaryDirectory(prefix="memport-backfill-bench-") as tmp:
        base = Path(tmp)
        landing = base / "dumps"
        keys = write_dumps(landing, n, records)
        print(f"{n} Mem0 dumps of {records} records each", flush=True)
        run_wall = memport_run(base / "run", landing)
        print(f"memport run --system mem0 : {run_wall:7.1f} s  ({run_wall / n:.2f} s per dump)", flush=True)
        bf_wall, runs, status = backfill(base / "dev", landing, keys)
        ok = bf_wall <= TARGET * run_wall
        print(
            f"backfill via dagster dev : {bf_wall:7.1f} s  ({bf_wall / n:.2f} s per dump, {runs} runs, "
            f"backfill {status})  = {bf_wall / run_wall:.2f}x memport run  "
            f"{'PASS' if ok else 'FAIL'} (target <= {TARGET:g}x)",
            flush=True,
        )
        for workers in (1, 2):
            wall = in_process(base / f"step-{workers}", landing, keys, workers)
            print(f"ingest step alone, {workers} worker(s): {wall:7.1f} s", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
