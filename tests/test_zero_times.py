"""Go's zero time (``0001-01-01T00:00:00Z``, what Zep writes for an unset time) is no time at all,
on every path that parses times: the shared Python parser and the SQL path."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl
import pytest

from connectors import registry
from connectors.kit.records import parse_time
from tests.connector_helpers import read_memory, reject_rows

GO_ZERO = "0001-01-01T00:00:00Z"


@pytest.mark.parametrize(
    "value", [GO_ZERO, "0001-01-01T00:00:00", "0001-01-01T00:00:00.000000000Z", "0001-01-01"]
)
def test_the_shared_parser_reads_go_zero_time_as_null(value: str) -> None:
    assert parse_time(value, "valid_at") is None
    assert parse_time("0001-01-01T00:00:01Z", "valid_at") == datetime(1, 1, 1, 0, 0, 1, tzinfo=UTC)


def test_zep_unset_times_are_null_and_fall_back() -> None:
    edge = {
        "uuid": "e-1",
        "name": "WORKS_AT",
        "fact": "Priya works at Northwind",
        "source_node_uuid": "n-1",
        "target_node_uuid": "n-2",
        "created_at": "2025-02-10T14:03:11Z",
        "valid_at": GO_ZERO,
        "invalid_at": GO_ZERO,
        "expired_at": GO_ZERO,
    }
    message = {"uuid": "m-1", "role": "user", "content": "hi", "created_at": "2025-02-10T14:03:09Z"}
    message |= {"reference_time": GO_ZERO, "updated_at": GO_ZERO}
    body = json.dumps({"edges": [edge], "messages": [message], "user_id": "priya"})
    episodes, rejects = read_memory(registry.get("zep"), body, "page.json")
    assert rejects.height == 0
    first, second = episodes.to_dicts()
    assert (first["valid_from"], first["valid_to"], first["superseded_at"]) == (None, None, None)
    assert first["status"] == "active"  # an unset expired_at is not a supersession
    assert second["observed_at"] == datetime(2025, 2, 10, 14, 3, 9, tzinfo=UTC)  # created_at, not year 1
    assert second["updated_at"] is None


def test_sql_path_zero_time_is_no_time() -> None:
    line = {
        "episode_id": "ep_1",
        "scope": "org:acme",
        "type": "decision",
        "content": "Adopt Postgres 16.",
        "timestamp": GO_ZERO,
    }
    lines = [line, line | {"episode_id": "ep_2", "timestamp": "2025-05-02T16:20:00Z"}]
    dump = "".join(json.dumps(x) + "\n" for x in lines)
    episodes, rejects = read_memory(registry.get("cortexdb"), dump, "d.jsonl")
    assert episodes["source_id"].to_list() == ["ep_2"]
    assert reject_rows(rejects) == [(0, "missing_field", "no timestamp to use as observed_at")]
    mem0 = [{"id": "m1", "memory": "Likes tea", "user_id": "u", "created_at": "2025-01-01T00:00:00Z"}]
    mem0[0]["updated_at"] = GO_ZERO
    episodes, _ = read_memory(registry.get("mem0"), json.dumps(mem0), "m.json")
    assert episodes["updated_at"].to_list() == [None]
    assert episodes.schema["updated_at"] == pl.Datetime("us", "UTC")
