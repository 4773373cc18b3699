"""Export requests are validated before any work; the lifecycle's states, errors and expiry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.errors import (
    ExportExpiredError,
    ExportFailedError,
    ExportNotFoundError,
    ExportNotReadyError,
    ExportRequestError,
)
from pipelines.exports import lifecycle
from pipelines.exports.request import ExportRequest
from pipelines.store.catalog import build_catalog, connect
from pipelines.store.episodes import EpisodeStore
from pipelines.store.locations import Location
from tests.export_fixtures import build_store

BASE = {"format": "ndjson", "tenant_id": "acme"}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"format": "xml"}, "format"),
        ({"format": None}, "format"),
        ({"categories": [f"c{i}" for i in range(21)]}, "categories"),
        ({"created_after": "2025-02-01", "created_before": "2025-01-01"}, "created_after"),
        ({"observed_start_us": 2, "observed_end_us": 1}, "observed_start_us"),
        ({"colour": "blue"}, "colour"),
        ({"created_after": "last tuesday"}, "created_after"),
        ({"as_of": "2025-13-01"}, "as_of"),
        ({"created_before_ms": "1718000000000"}, "created_before_ms"),
        ({"created_after": "2025-01-01", "created_after_ms": 1}, "created_after"),
        ({"tenant_id": None}, "tenant_id"),
        ({"types": ["memo"]}, "types"),
        ({"priority": "URGENT"}, "priority"),
        ({"source_system": "notion"}, "source_system"),
        ({"metadata": "not json"}, "metadata"),
        ({"compression": "brotli"}, "compression"),
        ({"profile": "cortexdb", "format": "csv"}, "profile"),
        ({"format": "markdown", "compression": "zstd"}, "compression"),
        ({"max_part_bytes": 10}, "max_part_bytes"),
        ({"ttl_hours": 0}, "ttl_hours"),
        ({"include_deleted": "yes"}, "include_deleted"),
    ],
)
def test_invalid_requests_fail_naming_the_field(fields: dict[str, Any], field: str) -> None:
    data = {k: v for k, v in (BASE | fields).items() if v is not None}
    with pytest.raises(ExportRequestError) as err:
        ExportRequest.parse(data)
    assert err.value.field == field
    assert repr(field) in str(err.value)


def test_times_are_explicit_iso_or_epoch_ms() -> None:
    a = ExportRequest.parse(BASE | {"created_after": "2024-06-10T06:13:20Z"}).filters
    b = ExportRequest.parse(BASE | {"created_after_ms": 1718000000000}).filters
    c = ExportRequest.parse(BASE | {"created_after": "2024-06-09T23:13:20-07:00"}).filters
    assert a.created_after == b.created_after == c.created_after
    assert ExportRequest.parse(BASE | {"as_of": "2025-01-01"}).filters.as_of == datetime(
        2025, 1, 1, tzinfo=UTC
    )


def test_request_round_trips_through_its_dict() -> None:
    r = ExportRequest.parse(BASE | {"scope": "org:a", "metadata": {"k": [1]}, "as_of_ms": 0, "tags": ["x"]})
    assert ExportRequest.parse(json.loads(json.dumps(r.to_dict()))) == r


@pytest.fixture
def store(tmp_path: Path) -> EpisodeStore:
    return build_store(EpisodeStore.from_url(str(tmp_path / "store")))


def test_lifecycle_pending_processing_ready(store: EpisodeStore, tmp_path: Path) -> None:
    exports = Location.from_url(str(tmp_path / "exports"))
    seen: list[str] = []
    pending = lifecycle.submit(exports, ExportRequest.parse(BASE))
    seen.append(lifecycle.get(exports, pending["id"])["status"])
    with pytest.raises(ExportNotReadyError, match="PENDING"):
        lifecycle.ready(exports, pending["id"])

    def progress(rows: int, total: int) -> None:
        seen.append(lifecycle.get(exports, pending["id"])["status"])

    done = lifecycle.run(store, exports, pending, progress=progress)
    assert seen[0] == "PENDING" and "PROCESSING" in seen
    m = lifecycle.ready(exports, done["id"])
    assert m["status"] == "READY" and m["rows"] == 6 and m["filters"] == {"tenant_id": "acme"}
    (f,) = m["files"]
    assert set(f) == {"name", "url", "bytes", "sha256"} and f["bytes"] == Path(f["url"]).stat().st_size
    assert datetime.fromisoformat(m["expires_at"]) - datetime.fromisoformat(m["finished_at"]) == timedelta(
        hours=72
    )


def test_missing_export_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ExportNotFoundError, match="EXPORT_NOT_FOUND"):
        lifecycle.ready(Location.from_url(str(tmp_path)), "exp-nope")


def test_failure_keeps_its_error(store: EpisodeStore, tmp_path: Path) -> None:
    exports = Location.from_url(str(tmp_path / "exports"))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the destination directory should be")
    m = lifecycle.export(store, exports, ExportRequest.parse(BASE | {"destination": str(blocker)}))
    assert m["status"] == "FAILED" and m["error"] and m["rows"] is None
    with pytest.raises(ExportFailedError, match="FAILED"):
        lifecycle.ready(exports, m["id"])


def test_expiry_deletes_files_and_says_expired(store: EpisodeStore, tmp_path: Path) -> None:
    exports = Location.from_url(str(tmp_path / "exports"))
    old = lifecycle.export(store, exports, ExportRequest.parse(BASE | {"ttl_hours": 1}))
    new = lifecycle.export(store, exports, ExportRequest.parse(BASE))
    assert lifecycle.expire(exports) == []
    later = datetime.now(UTC) + timedelta(hours=2)
    assert lifecycle.expire(exports, now=later) == [old["id"]]
    assert not Path(old["files"][0]["url"]).exists() and Path(new["files"][0]["url"]).exists()
    with pytest.raises(ExportExpiredError, match="EXPORT_EXPIRED"):
        lifecycle.ready(exports, old["id"])
    assert lifecycle.expire(exports, now=later) == []  # expired once

    build_catalog(store, tmp_path / "cat.duckdb", exports=exports)
    with connect(tmp_path / "cat.duckdb") as con:
        rows = con.sql("SELECT id, status, rows, files FROM exports").fetchall()
    assert [(r[0], r[1]) for r in rows] == [(new["id"], "READY"), (old["id"], "EXPIRED")]  # newest first
    assert rows[0][2] == 6 and rows[0][3] == 1


def test_an_export_left_pending_by_a_dead_run_fails_then_expires(tmp_path: Path) -> None:
    exports = Location.from_url(str(tmp_path / "exports"))
    stuck = lifecycle.submit(exports, ExportRequest.parse(BASE | {"ttl_hours": 1}))
    leftover = Path(exports.path(stuck["id"])) / "episodes.ndjson.tmp"
    leftover.write_text("half a file", encoding="utf-8")
    soon = datetime.now(UTC) + timedelta(hours=2)  # past its TTL, but a long run may still own it
    assert lifecycle.expire(exports, now=soon) == []
    with pytest.raises(ExportNotReadyError):
        lifecycle.ready(exports, stuck["id"])
    much_later = datetime.now(UTC) + timedelta(hours=1) + lifecycle.ABANDONED_AFTER + timedelta(minutes=1)
    assert lifecycle.expire(exports, now=much_later) == [stuck["id"]]
    assert not leftover.exists()
    m = json.loads(Path(exports.path(stuck["id"], "manifest.json")).read_text(encoding="utf-8"))
    assert m["status"] == "EXPIRED" and m["error"].startswith("abandoned: still PENDING")
