"""Naive times are UTC whatever the machine's time zone (DESIGN: "Naive times are UTC").

DuckDB sessions take the process's local zone (``TZ``) by default, so ``CAST(… AS TIMESTAMPTZ)``
of a naive time, or a timestamp rendered as text, silently shifts by the offset on a machine not
set to UTC. Ingest and export in a child whose ``TZ`` is New York, and compare.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_CHILD = r"""
import json, sys
from pathlib import Path
from pipelines.exports import lifecycle
from pipelines.exports.request import ExportRequest
from pipelines.store.episodes import EpisodeStore
from pipelines.store.ingest import ingest_dump
from pipelines.store.locations import Location

base, system, name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
store = EpisodeStore.from_url(str(base / "store"))
result = ingest_dump(store, Location.from_url(str(base / "landing")), system, name, tenant_id="acme")
assert result.counts["rejected"] == 0, result.manifest
request = ExportRequest.parse({"format": "ndjson", "tenant_id": "acme"})
manifest = lifecycle.export(store, Location.from_url(str(base / "exports")), request)
dest = Location.from_url(manifest["destination"])
text = dest.fs.cat_file(dest.path(manifest["files"][0]["name"])).decode()
rows = [json.loads(x) for x in text.splitlines()]
print(json.dumps(next(r for r in rows if r["source_id"] in ("m-1", "ep-1"))))
"""

MEM0 = {
    "id": "m-1",
    "memory": "likes tea",
    "user_id": "u1",
    "created_at": "2025-03-01T10:00:00",
    "updated_at": "2025-03-02T11:30:00",
}
CORTEXDB = {
    "episode_id": "ep-1",
    "scope": "org:acme",
    "type": "observation",
    "content": "likes tea",
    "timestamp": "2025-03-02T11:30:00",
}


def lines(record: dict[str, str]) -> str:
    """Two JSON Lines (one alone reads as a single object): the record, and a later one."""
    text_key = "memory" if "memory" in record else "content"
    id_key = "id" if "id" in record else "episode_id"
    later = {**record, id_key: record[id_key] + "-b", text_key: "later"}
    return json.dumps(record) + "\n" + json.dumps(later) + "\n"


CASES = {  # file → (system, text, expected times)
    "mem0/array.json": (json.dumps([MEM0]), {"created_at": "2025-03-01T10:00:00.000000Z"}),
    "mem0/lines.jsonl": (lines(MEM0), {"created_at": "2025-03-01T10:00:00.000000Z"}),
    "cortexdb/lines.jsonl": (lines(CORTEXDB), {"observed_at": "2025-03-02T11:30:00.000000Z"}),
}


@pytest.mark.parametrize("dump", sorted(CASES))
def test_naive_times_are_utc_in_any_machine_time_zone(dump: str, tmp_path: Path) -> None:
    text, expected = CASES[dump]
    system, name = dump.split("/")
    (tmp_path / "landing" / system).mkdir(parents=True)
    (tmp_path / "landing" / dump).write_text(text, encoding="utf-8")
    env = {**os.environ, "TZ": "America/New_York"}
    args = [sys.executable, "-c", _CHILD, str(tmp_path), system, name]
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {k: row[k] for k in expected} == expected, row
