"""Dagster: definitions load, in-process materializations, the landing sensor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from connectors import registry
from connectors.base import path_captures
from pipelines.orchestration.assets import INGEST_ASSETS, episode_catalog
from pipelines.orchestration.definitions import defs
from pipelines.orchestration.resources import (
    BackupResource,
    EpisodeStoreResource,
    ExportProgress,
    ExportTarget,
    ImportSettings,
    LandingZone,
)
from pipelines.orchestration.sensors import RANGE_END_TAG, RANGE_START_TAG
from pipelines.store.locations import Location
from tests.conftest import FIXTURES, put


def test_definitions_load() -> None:
    keys = {spec.key.to_user_string() for spec in defs.resolve_all_asset_specs()}
    assert keys == {f"{system}_episodes" for system in registry.CONNECTORS} | {
        "episode_catalog",
        "episode_exports",
        "store_snapshot",
    }
    for name in [f"ingest_{system}" for system in registry.CONNECTORS] + ["refresh_catalog"]:
        assert defs.resolve_job_def(name) is not None
    assert defs.resolve_sensor_def("landing_sensor") is not None
    for asset in INGEST_ASSETS:
        assert asset.descriptions_by_key[asset.key]


def test_definitions_load_through_workspace_yaml(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    repo = Path(__file__).parent.parent
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            str(repo / "workspace.yaml"),
        ],
        cwd=repo,
        env=os.environ | {"DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture
def resources(tmp_path: Path, backend: str) -> dict[str, Any]:
    return {
        "export_target": ExportTarget(url=f"{backend}/exports"),
        "export_progress": ExportProgress(),
        "landing": LandingZone(url=f"{backend}/landing"),
        "episode_store": EpisodeStoreResource(
            url=f"{backend}/store", catalog_path=str(tmp_path / "episodes.duckdb")
        ),
        "import_settings": ImportSettings(
            tenant_id="acme", scope_templates='{"mem0": "org:acme/user:{user_id}"}'
        ),
        "backup": BackupResource(url=f"{backend}/backups"),
    }


def test_materialize_partitions_and_catalog(resources: dict[str, Any], tmp_path: Path) -> None:
    landing = Location.from_url(resources["landing"].url)  # type: ignore[attr-defined]
    put(landing, "mem0/page.json", (FIXTURES / "mem0" / "paginated_v3.json").read_bytes())
    put(
        landing,
        "cortexdb/x.jsonl",
        (FIXTURES / "cortexdb" / "export_and_import.jsonl").read_bytes(),
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("mem0_dumps", ["page.json"])
    instance.add_dynamic_partitions("cortexdb_dumps", ["x.jsonl"])
    mem0 = next(a for a in INGEST_ASSETS if a.key.path == ["mem0_episodes"])
    cortex = next(a for a in INGEST_ASSETS if a.key.path == ["cortexdb_episodes"])

    result = dg.materialize([mem0], resources=resources, instance=instance, partition_key="page.json")
    assert result.success
    (mat,) = result.asset_materializations_for_node(mem0.op.name)
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert (meta["records_read"], meta["accepted"], meta["rejected"], meta["duplicates"]) == (
        3,
        2,
        0,
        1,
    )
    assert meta["dagster/row_count"] == 2
    assert "Uses PostgreSQL 17" in meta["preview"]
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"accounting_balances": True, "reject_rate": True}

    assert dg.materialize([cortex], resources=resources, instance=instance, partition_key="x.jsonl").success
    result = dg.materialize([episode_catalog], resources=resources, instance=instance)
    assert result.success
    (mat,) = result.asset_materializations_for_node("episode_catalog")
    assert mat.metadata["episodes"].value == 7
    con = duckdb.connect(str(tmp_path / "episodes.duckdb"), read_only=True)
    Location.from_url(resources["episode_store"].url).register_with(con)  # type: ignore[attr-defined]
    assert con.sql("SELECT scope FROM episodes WHERE source_system = 'mem0' LIMIT 1").fetchall() == [
        ("org:acme/user:dana",)
    ]


def test_bad_dump_fails_the_partition_with_a_clear_message(
    resources: dict[str, Any],
) -> None:
    landing = Location.from_url(resources["landing"].url)  # type: ignore[attr-defined]
    put(landing, "mem0/letta.af", '{\n  "agents": [],\n  "blocks": []\n}')
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("mem0_dumps", ["letta.af"])
    mem0 = next(a for a in INGEST_ASSETS if a.key.path == ["mem0_episodes"])
    result = dg.materialize(
        [mem0],
        resources=resources,
        instance=instance,
        partition_key="letta.af",
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.cause.message  # type: ignore[union-attr]
    assert "letta.af: not a Mem0 memory dump" in message and "agents, blocks" in message


def test_landing_sensor_adds_partitions_and_requests_runs(
    resources: dict[str, Any],
) -> None:
    landing = Location.from_url(resources["landing"].url)  # type: ignore[attr-defined]
    put(landing, "mem0/a.json", "[]")
    put(landing, "mem0/sub/b.json", "[]")
    put(landing, "cortexdb/c.jsonl", "")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("mem0_dumps", ["a.json"])  # already known
    sensor = defs.resolve_sensor_def("landing_sensor")
    # the daemon refuses run requests for jobs the sensor does not declare
    assert {t.job_name for t in sensor.targets} == {f"ingest_{name}" for name in registry.CONNECTORS}
    names = ("landing", "episode_store", "import_settings")
    context = dg.build_sensor_context(instance=instance, resources={k: resources[k] for k in names})
    result = sensor(context)
    # a.json was a partition before its file came, never ingested: it is ingested now too
    # a.json (known) and sub/b.json (added now, after it) are consecutive partitions: one ranged run
    assert sorted(
        (r.job_name, r.partition_key, r.tags.get(RANGE_START_TAG), r.tags.get(RANGE_END_TAG))
        for r in result.run_requests
    ) == [
        ("ingest_cortexdb", "c.jsonl", None, None),
        ("ingest_mem0", None, "a.json", "sub/b.json"),
    ]
    added = {r.partitions_def_name: list(r.partition_keys) for r in result.dynamic_partitions_requests}
    assert added == {"mem0_dumps": ["sub/b.json"], "cortexdb_dumps": ["c.jsonl"]}


def test_scope_templates_per_system_and_per_dump_glob() -> None:
    settings = ImportSettings(
        tenant_id="acme",
        scope_templates='{"mem0": "user:{user_id}", "mem0/*.db": "org:acme/oss", "mem0/h/*.db": "x"}',
    )
    assert settings.scope_template("mem0", "page.json") == "user:{user_id}"
    assert settings.scope_template("mem0", "history.db") == "org:acme/oss"
    assert settings.scope_template("mem0", "h/history.db") == "x"  # the longest matching glob
    assert settings.scope_template("zep", "page.json") is None  # the connector's default
    assert ImportSettings(tenant_id="acme").scope_template("mem0", "a.json") is None
    assert settings.path_fields("mem0", "history.db") == {}


def test_scope_template_globs_name_parts_of_the_path() -> None:
    settings = ImportSettings(
        tenant_id="acme",
        scope_templates=json.dumps(
            {"zep": "{owner}", "zep/sessions/{session_id}/*.json": "org:acme/session:{session_id}"}
        ),
    )
    relpath = "sessions/s-42/page-1.json"
    assert settings.scope_template("zep", relpath) == "org:acme/session:{session_id}"
    assert settings.path_fields("zep", relpath) == {"session_id": "s-42"}
    assert settings.scope_template("zep", "sessions/page-1.json") == "{owner}"  # {name} needs a segment
    assert path_captures("a/{x}/{x}.json", "a/b/b.json") == {"x": "b"}
    assert path_captures("a/{x}/{x}.json", "a/b/c.json") is None
    assert path_captures("[!a]*.db", "history.db") == {}


def test_export_specs_and_adhoc_export_and_expiry(resources: dict[str, Any], tmp_path: Path) -> None:
    from pipelines.exports import lifecycle
    from pipelines.orchestration.exports import adhoc_export, episode_exports, expire_exports
    from pipelines.store.ingest import ingest_dump

    landing = Location.from_url(resources["landing"].url)
    put(landing, "cortexdb/mixed.jsonl", (FIXTURES / "cortexdb" / "export_and_import.jsonl").read_bytes())
    specs = tmp_path / "specs.yaml"
    specs.write_text(
        "specs:\n  - {name: eng, format: csv, scope: 'org:acme/dept:eng'}\n"
        "  - {name: all, format: markdown}\n",
        encoding="utf-8",
    )
    resources["export_target"] = ExportTarget(url=resources["export_target"].url, specs_path=str(specs))
    with dg.DagsterInstance.ephemeral() as instance:
        ingest_dump(resources["episode_store"].store(), landing, "cortexdb", "mixed.jsonl", tenant_id="acme")
        assert dg.materialize(
            [episode_catalog, episode_exports], resources=resources, instance=instance
        ).success
        catalog = resources["episode_store"].catalog_path
        with duckdb.connect(catalog, read_only=True) as con:
            rows = con.sql("SELECT name, status, rows FROM exports ORDER BY name").fetchall()
        assert rows == [("all", "READY", 5), ("eng", "READY", 5)]  # team:payments is under dept:eng

        local = dg.Definitions(jobs=[adhoc_export, expire_exports], resources=resources)
        job = local.resolve_job_def("adhoc_export")
        run_config = {"ops": {"run_export": {"config": {"format": "ndjson", "types": ["decision"]}}}}
        result = job.execute_in_process(run_config=run_config, instance=instance)
        export_id = result.output_for_node("run_export")
        m = lifecycle.ready(resources["export_target"].location(), export_id)
        assert m["rows"] == 1 and m["filters"] == {"tenant_id": "acme", "types": ["decision"]}

        runs_before = len(instance.get_runs())
        with pytest.raises(dg.DagsterInvalidConfigError) as refused:  # at launch: no run, no work
            job.execute_in_process(
                run_config={"ops": {"run_export": {"config": {"format": "xml"}}}}, instance=instance
            )
        allowed = "ExportFormat[json, ndjson, csv, markdown]"
        assert f"config:format not in enum type {allowed} got xml" in str(refused.value)
        assert len(instance.get_runs()) == runs_before
        expired = local.resolve_job_def("expire_exports").execute_in_process(instance=instance)
        assert expired.output_for_node("expire_old_exports") == []
