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

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import memport_settings

REPO = Path(__file__).parent.parent.parent
SETTLE_S = 100  # how long catalog runs are counted after a phase's last ingest run
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
RUNS = "{ runsOrError(limit: 1000) { ... on Runs { results { runId jobName status endTime tags { key value } assetSelection { path } } } } }"  # noqa: E501
LAUNCH = (
    "mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) { __typename "
    "... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"
)


class Dev:
    """``dagster dev`` in ``work`` (no ``.env`` there: the environment below is the one used)."""

    def __init__(self, work: Path, n: int) -> None:
        (work / "landing" / "mem0").mkdir(parents=True)
        dump = (REPO / "tests" / "fixtures" / "mem0" / "paginated_v3.json").read_bytes()
        for i in range(n):
            (work / "landing" / "mem0" / f"d{i:03}.json").write_bytes(dump)
        home = work / "dagster"
        home.mkdir()
        (home / "dagster.yaml").write_bytes((REPO / "pipelines/orchestration/dagster.yaml").read_bytes())
        (work / "workspace.yaml").write_text(
            "load_from:\n  - python_module:\n      module_name: pipelines.orchestration.definitions\n"
            f"      attribute: defs\n      working_directory: {REPO}\n      location_name: memport\n",
            encoding="utf-8",
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = os.environ | memport_settings(work) | {"DAGSTER_HOME": str(home)}
        dagster = Path(sys.executable).parent / "dagster"
        with open(work / "dev.log", "wb") as log:
            self.proc = subprocess.Popen(
                [str(dagster), "dev", "-w", "workspace.yaml", "-p", str(self.port)],
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        for _ in range(150):
            try:
                self.gql("{ version }")
                return
            except OSError:
                time.sleep(2)

    def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            data: dict[str, Any] = json.load(response)["data"]
            return data

    def runs(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.gql(RUNS)["runsOrError"]["results"]
        return runs

    def backfill(self, params: dict[str, Any]) -> str:
        result = self.gql(LAUNCH, {"p": params})["launchPartitionBackfill"]
        assert "backfillId" in result, result
        return str(result["backfillId"])

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def is_catalog(run: dict[str, Any]) -> bool:
    selection = [a["path"] for a in run["assetSelection"] or []]
    return run["jobName"] == "refresh_catalog" or selection == [["episode_catalog"]]


def in_backfill(backfill_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda run: {"key": "dagster/backfill", "value": backfill_id} in run["tags"]


def phase(dev: Dev, name: str, ingest: Callable[[dict[str, Any]], bool], n: int, seen: set[str]) -> bool:
    """Wait for the phase's n ingest runs to finish, then count the catalog runs that follow."""
    deadline, runs = time.time() + 1800, []
    while time.time() < deadline:
        runs = [r for r in dev.runs() if ingest(r)]
        if len(runs) >= n and all(r["status"] in FINISHED for r in runs):
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
        dev = Dev(Path(tmp), n)
        seen: set[str] = set()
        try:
            ok = phase(dev, "landing sensor", lambda r: r["jobName"] == "ingest_mem0", n, seen)
            asset = dev.backfill({"assetSelection": [{"path": ["mem0_episodes"]}], "partitionNames": keys})
            ok &= phase(dev, "asset backfill", in_backfill(asset), n, seen)
            repository = {"repositoryName": "__repository__", "repositoryLocationName": "memport"}
            job = dev.backfill(
                {
                    "selector": {
                        "partitionSetName": "ingest_mem0_partition_set",
                        "repositorySelector": repository,
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
