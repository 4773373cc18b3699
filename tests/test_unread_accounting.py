"""Bytes a reader could not read are visible (issue 10, §2): the import manifest, the catalog's
``imports`` view, the ``accounting_balances`` check and the ``memport run`` exit code say so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import dotenv
import duckdb

from pipelines.orchestration.assets import _check_results
from pipelines.store import imports_index
from pipelines.store.episodes import EpisodeStore
from pipelines.store.ingest import ingest_dump
from pipelines.store.locations import Location
from tests.conftest import memport_settings, put

REPO = Path(__file__).parent.parent


def _records(n: int, prefix: str = "m") -> bytes:
    items = [
        json.dumps(
            {"id": f"{prefix}{i}", "memory": f"text {i}", "user_id": "u", "created_at": "2025-01-01T00:00Z"}
        )
        for i in range(n)
    ]
    return ("[" + ",\n".join(items) + "]").encode()


def test_a_cut_dump_is_unread_in_manifest_catalog_and_check(tmp_path: Path) -> None:
    landing = Location.from_url(str(tmp_path / "landing"))
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    data = _records(30)
    start = data.index(b'{"id": "m20"')
    put(landing, "mem0/cut.json", data[: start + 11])
    put(landing, "mem0/ok.json", _records(5))
    result = ingest_dump(store, landing, "mem0", "cut.json", tenant_id="acme")
    ok = ingest_dump(store, landing, "mem0", "ok.json", tenant_id="acme")
    assert result.counts == {"read": 21, "accepted": 20, "rejected": 1, "duplicate": 0, "unread_bytes": 11}
    [span] = result.manifest["unread"]
    assert (span["offset"], span["size"], span["reason"]) == (start, 11, "truncated_document")
    rows = [imports_index.import_row(f"m{i}.json", m.manifest, "") for i, m in enumerate((result, ok))]
    frame = imports_index.frame(rows).sort("dump")
    assert frame.select("dump", "unread_bytes", "unread_offset").rows() == [
        ("cut.json", 11, start),
        ("ok.json", 0, None),
    ]
    assert "truncated_document at byte" in frame["unread_reason"][0]
    key = dg.AssetKey("x")
    assert not _check_results(result, key)[0].passed
    assert _check_results(ok, key)[0].passed


def test_memport_run_exits_nonzero_when_bytes_were_not_read(tmp_path: Path) -> None:
    """The dump is cut short: its records are imported, and the run says what was not read."""
    landing = tmp_path / "landing" / "mem0"
    landing.mkdir(parents=True)
    data = _records(30)
    (landing / "cut.json").write_bytes(data[: data.index(b'{"id": "m20"') + 11])
    (landing / "ok.json").write_bytes(_records(5, "ok"))
    defaults = {k: v or "" for k, v in dotenv.dotenv_values(REPO / ".env").items()}
    env = os.environ | defaults | memport_settings(tmp_path)
    out = subprocess.run(
        [str(Path(sys.executable).parent / "memport"), "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "mem0/cut.json: 11 bytes not read (truncated_document at byte" in out.stdout
    assert "ok.json" not in out.stdout.split("These failed:")[-1]
    with duckdb.connect(str(tmp_path / "episodes.duckdb"), read_only=True) as con:
        rows = con.sql("SELECT dump, accepted, unread_bytes FROM imports ORDER BY dump").fetchall()
    assert rows == [("cut.json", 20, 11), ("ok.json", 5, 0)]
