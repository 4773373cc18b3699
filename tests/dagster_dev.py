"""A real ``dagster dev`` (webserver + daemon) on 127.0.0.1, for the tests and benchmarks that drive
Dagster through its GraphQL API as the UI does.

Its own ``DAGSTER_HOME`` (with the project's ``dagster.yaml``), memport's settings pointed at
``work`` (``tests.conftest.memport_settings``), a free port; no ``.env`` is read.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import memport_settings

REPO = Path(__file__).parent.parent
REPOSITORY = {"repositoryName": "__repository__", "repositoryLocationName": "memport"}
LAUNCH_BACKFILL = (
    "mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) { __typename "
    "... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } "
    "... on InvalidSubsetError { message } ... on UnauthorizedError { message } } }"
)
BACKFILL = (
    "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { "
    "id status numCancelable endTimestamp runs(limit: 1000) { runId status tags { key value } } } } }"
)
PARTITION_STATUS = (
    "query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode { "
    "assetPartitionStatuses { ... on DefaultPartitionStatuses { materializedPartitions "
    "failedPartitions materializingPartitions } } } } }"
)
RUNS = (
    "{ runsOrError(limit: 1000) { ... on Runs { results { runId jobName status startTime endTime "
    "tags { key value } assetSelection { path } } } } }"
)
SENSOR = (
    "query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor { id "
    "sensorState { id status } } } }"
)
STOP_SENSOR = (
    "mutation($id: String!) { stopSensor(id: $id) { __typename "
    "... on StopSensorMutationResult { instigationState { status } } } }"
)
ADD_PARTITION = (
    "mutation($r: RepositorySelector!, $d: String!, $k: String!) { addDynamicPartition("
    "repositorySelector: $r, partitionsDefName: $d, partitionKey: $k) { __typename } }"
)
RUN_FAILURE = (
    "query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection(afterCursor: null) { "
    "events { __typename ... on ExecutionStepFailureEvent { error { message } } } } } } }"
)


class DagsterDev:
    """``dagster dev`` over the project's definitions, settings under ``work``."""

    def __init__(self, work: Path, *, stop_landing_sensor: bool = True) -> None:
        self.work = work
        (work / "landing").mkdir(parents=True, exist_ok=True)
        self.home = work / "dagster"
        self.home.mkdir(exist_ok=True)
        (self.home / "dagster.yaml").write_bytes((REPO / "pipelines/orchestration/dagster.yaml").read_bytes())
        (work / "workspace.yaml").write_text(
            "load_from:\n  - python_module:\n      module_name: pipelines.orchestration.definitions\n"
            f"      attribute: defs\n      working_directory: {REPO}\n      location_name: memport\n",
            encoding="utf-8",
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.env = os.environ | memport_settings(work) | {"DAGSTER_HOME": str(self.home)}
        dagster = Path(sys.executable).parent / "dagster"
        with open(work / "dev.log", "wb") as log:
            self.proc = subprocess.Popen(
                [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)],
                cwd=work,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_until_loaded()
            if stop_landing_sensor:
                self.stop_sensor("landing_sensor")
        except BaseException:
            self.stop()
            raise

    def _wait_until_loaded(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited: {(self.work / 'dev.log').read_text()[-3000:]}")
            try:
                if self.gql(SENSOR, {"s": REPOSITORY | {"sensorName": "landing_sensor"}})["sensorOrError"]:
                    return
            except (OSError, KeyError, TypeError):
                pass
            time.sleep(1)
        raise TimeoutError(
            f"dagster dev did not load in {timeout} s: {(self.work / 'dev.log').read_text()[-3000:]}"
        )

    def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.load(response)
        if answer.get("errors"):
            raise RuntimeError(f"GraphQL errors: {answer['errors']}")
        data: dict[str, Any] = answer["data"]
        return data

    def stop_sensor(self, name: str) -> None:
        sensor = self.gql(SENSOR, {"s": REPOSITORY | {"sensorName": name}})["sensorOrError"]
        result = self.gql(STOP_SENSOR, {"id": sensor["sensorState"]["id"]})["stopSensor"]
        assert result["instigationState"]["status"] == "STOPPED", result

    def add_partitions(self, partitions_def: str, keys: list[str]) -> None:
        """As the asset's page's "add partition" does, one key at a time."""
        for key in keys:
            result = self.gql(ADD_PARTITION, {"r": REPOSITORY, "d": partitions_def, "k": key})
            assert result["addDynamicPartition"]["__typename"] == "AddDynamicPartitionSuccess", result

    def launch_backfill(self, asset: str, partitions: list[str]) -> str:
        """A backfill of ``partitions`` of one asset, as the asset's page launches it."""
        return self.launch({"assetSelection": [{"path": [asset]}], "partitionNames": partitions})

    def launch(self, params: dict[str, Any]) -> str:
        """A backfill of any ``LaunchBackfillParams`` (an asset selection, or a job's partition set)."""
        result = self.gql(LAUNCH_BACKFILL, {"p": params})["launchPartitionBackfill"]
        assert "backfillId" in result, result
        return str(result["backfillId"])

    def backfill(self, backfill_id: str) -> dict[str, Any]:
        backfill: dict[str, Any] = self.gql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        return backfill

    def partition_statuses(self, asset: str) -> dict[str, list[str]]:
        node = self.gql(PARTITION_STATUS, {"key": {"path": [asset]}})["assetNodeOrError"]
        statuses: dict[str, list[str]] = node["assetPartitionStatuses"]
        return statuses

    def runs(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.gql(RUNS)["runsOrError"]["results"]
        return runs

    def step_failures(self, run_id: str) -> list[str]:
        run = self.gql(RUN_FAILURE, {"id": run_id})["runOrError"]
        events = run["eventConnection"]["events"]
        return [e["error"]["message"] for e in events if e["__typename"] == "ExecutionStepFailureEvent"]

    def wait_for_backfill(self, backfill_id: str, timeout: float) -> dict[str, Any]:
        """Polls until the backfill is done (completed, failed or canceled); returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            backfill = self.backfill(backfill_id)
            if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
                return backfill
            time.sleep(1)
        raise TimeoutError(f"backfill {backfill_id} not done in {timeout} s: {self.backfill(backfill_id)}")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
