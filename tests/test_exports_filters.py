"""Every export filter alone and combined, against the hand-built store; expected sets are data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.exports import lifecycle
from pipelines.exports.request import ExportRequest
from pipelines.store.episodes import EpisodeStore
from pipelines.store.locations import Location
from tests.export_fixtures import CASES, build_store


@pytest.fixture(scope="module")
def hand_store(tmp_path_factory: pytest.TempPathFactory) -> EpisodeStore:
    return build_store(EpisodeStore.from_url(str(tmp_path_factory.mktemp("hand") / "store")))


def exported_keys(store: EpisodeStore, exports: Location, filters: dict[str, Any]) -> list[str]:
    request = ExportRequest.parse({"format": "ndjson", "tenant_id": "acme"} | filters)
    manifest = lifecycle.export(store, exports, request)
    assert manifest["status"] == "READY", manifest["error"]
    (f,) = manifest["files"]
    lines = Path(f["url"]).read_text(encoding="utf-8").splitlines()
    assert manifest["rows"] == len(lines)
    return sorted(json.loads(line)["idempotency_key"].removeprefix("test:") for line in lines)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_filter(case: dict[str, Any], hand_store: EpisodeStore, tmp_path: Path) -> None:
    got = exported_keys(hand_store, Location.from_url(str(tmp_path)), case["filters"])
    assert got == sorted(case["expected"])


def test_every_filter_field_is_exercised() -> None:
    from dataclasses import fields

    from pipelines.exports.request import ExportFilters

    used = {k.removesuffix("_ms") for c in CASES for k in c["filters"]}
    assert {f.name for f in fields(ExportFilters)} <= used


@pytest.mark.parametrize("tenant", ["acme", "globex", "nobody"])
def test_a_tenant_filter_never_returns_another_tenants_rows(
    tenant: str, hand_store: EpisodeStore, tmp_path: Path
) -> None:
    for fmt in ("ndjson", "csv", "json"):
        request = ExportRequest.parse({"format": fmt, "tenant_id": tenant, "include_superseded": True})
        manifest = lifecycle.export(hand_store, Location.from_url(str(tmp_path / fmt)), request)
        text = Path(manifest["files"][0]["url"]).read_text(encoding="utf-8")
        others = {"acme", "globex"} - {tenant}
        assert not any(f'"tenant_id":"{o}"' in text or f",{o}," in text for o in others)
    assert "another tenant's secret" not in text or tenant == "globex"
