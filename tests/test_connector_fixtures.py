"""Each system's fixtures give exactly the expected episodes and rejects (expected.json, data)."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pytest

from connectors import registry
from tests.conftest import FIXTURES
from tests.test_connectors_conformance import read_all

CASES = [
    (system, name, expected)
    for system in registry.CONNECTORS
    if (FIXTURES / system / "expected.json").exists()
    for name, expected in json.loads(
        (FIXTURES / system / "expected.json").read_text(encoding="utf-8")
    ).items()
]


def _rows(frame: pl.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    rows = []
    for row in frame.select(columns).to_dicts():
        if "metadata" in row:
            row["metadata"] = json.loads(row["metadata"])
        for key, value in row.items():
            if hasattr(value, "isoformat"):
                row[key] = value.isoformat()
        rows.append(row)
    return rows


@pytest.mark.parametrize(("system", "name", "expected"), CASES, ids=[f"{s}/{n}" for s, n, _ in CASES])
def test_fixture_gives_expected_episodes(system: str, name: str, expected: dict[str, Any]) -> None:
    batches = read_all(
        registry.get(system),
        FIXTURES / system / name,
        scope_template=expected["scope_template"],
        path_fields=expected.get("path_fields"),  # as a MEMPORT_SCOPE_TEMPLATES glob would name them
    )
    episodes = pl.concat([b.episodes for b in batches])
    rejects = pl.concat([b.rejects for b in batches])
    columns = list(expected["episodes"][0]) if expected["episodes"] else ["dump_record"]
    assert _rows(episodes, columns) == expected["episodes"]
    assert _rows(rejects, ["dump_record", "reason", "detail"]) == expected["rejects"]
    assert sum(b.read for b in batches) == episodes.height + rejects.height
    assert episodes["tenant_id"].unique().to_list() == ["acme"]
    assert episodes["episode_id"].str.starts_with("ep_").all()
