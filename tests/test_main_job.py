"""The README's main job, ``memport run``, on the shipped sample dumps in ``data/landing/``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import dotenv
import duckdb

from connectors import registry
from pipelines.orchestration.definitions import defs
from tests.conftest import memport_settings

REPO = Path(__file__).parent.parent


def test_main_job_ingests_every_system_in_the_samples(tmp_path: Path) -> None:
    shutil.copytree(REPO / "data" / "landing", tmp_path / "landing")
    defaults = {k: v or "" for k, v in dotenv.dotenv_values(REPO / ".env").items()}
    env = os.environ | defaults | memport_settings(tmp_path)
    # the daemon of a `make dev` on the same instance ticks the catalog's automation before and after
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copyfile(REPO / "pipelines" / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    out = subprocess.run(
        [str(Path(sys.executable).parent / "memport"), "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Query it:" in out.stdout
    with duckdb.connect(str(tmp_path / "episodes.duckdb"), read_only=True) as con:
        systems = {s for (s,) in con.sql("SELECT DISTINCT source_system FROM episodes").fetchall()}
        rejected = {s for (s,) in con.sql("SELECT DISTINCT source_system FROM rejects").fetchall()}
        balanced = con.sql("SELECT bool_and(read = accepted + rejected + duplicate) FROM imports").fetchall()
        exports = con.sql("SELECT format, profile, status, rows, files, destination FROM exports").fetchall()
    assert systems == set(registry.CONNECTORS), "every system's samples give episodes"
    assert rejected == set(registry.CONNECTORS), "every system's samples show rejects"
    assert balanced == [(True,)]
    # every format (and both profiles) exported from the sample specs, READY, files on disk
    assert {(f, p) for f, p, *_ in exports} == {
        ("json", None),
        ("ndjson", None),
        ("csv", None),
        ("markdown", None),
        ("ndjson", "cortexdb"),
        ("csv", "mnueron"),
    }
    assert all(status == "READY" and rows > 0 and files == 1 for _, _, status, rows, files, _ in exports)
    for *_, destination in exports:
        assert Path(destination).parent == tmp_path / "exports"
        assert (Path(destination) / "manifest.json").exists()
    assert str(tmp_path / "exports") in out.stdout

    # the main job ends with today's snapshot, proven restorable and listed in the catalog
    with duckdb.connect(str(tmp_path / "episodes.duckdb"), read_only=True) as con:
        snapshots = con.sql("SELECT rows, check_passed, manifest FROM snapshots").fetchall()
        episodes = con.sql("SELECT count(*) FROM episode_log").fetchall()[0][0]
    assert [(rows, passed) for rows, passed, _ in snapshots] == [(episodes, True)]
    assert Path(snapshots[0][2]).is_file() and str(tmp_path / "backups") in snapshots[0][2]
    assert "snapshot " in out.stdout and "restore check passed" in out.stdout

    # `memport run` refreshed the catalog itself, after its last ingest: the daemon adds no refresh
    with dg.DagsterInstance.from_config(str(home)) as instance:
        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
        ingests = sum(
            len(instance.fetch_materializations(dg.AssetKey(f"{s}_episodes"), limit=100).records)
            for s in registry.CONNECTORS
        )
    assert ingests > len(registry.CONNECTORS), "several ingest runs, and"
    assert after.total_requested == 0, "no refresh of the catalog requested after memport run"
