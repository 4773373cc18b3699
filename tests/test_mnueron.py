"""Mnueron specifics: JSON/NDJSON/CSV, epoch-ms timestamps, tags, the namespace alias, history."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pytest

from connectors import registry
from connectors.errors import DumpFormatError
from tests.connector_helpers import read_memory, reject_rows, rows

MNUERON = registry.get("mnueron")
HEADER = "id,content,namespace,tags,source,source_ref,created_at,updated_at\n"


def read(data: str | bytes, name: str = "dump", **kw: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    return read_memory(MNUERON, data, name, **kw)


HISTORY = {"confidence": 0.9, "history": [{"at": 1717000000000, "content": "User prefers short replies."}]}
ROW = {
    "id": "9b1e4c1e",
    "namespace": "my-app",
    "content": 'User prefers concise replies, "no fluff".',
    "tags": ["preferences", "tone"],
    "source": "sdk",
    "source_ref": "chat:4411",
    "metadata": HISTORY,
    "created_at": 1716990000000,
    "updated_at": 1717000000000,
}
COLUMNS = ["dump_record", "idempotency_key", "scope", "namespace", "content", "tags", "source", "status"]
EXPECTED = {
    "dump_record": 0,
    "idempotency_key": "mnueron:9b1e4c1e",
    "scope": "namespace:my-app",
    "namespace": "my-app",
    "content": 'User prefers concise replies, "no fluff".',
    "tags": ["preferences", "tone"],
    "source": "sdk",
    "status": "active",
}


@pytest.mark.parametrize(
    "data",
    [
        json.dumps([ROW], indent=2),
        json.dumps({"memories": [ROW], "total": 1, "limit": 50, "offset": 0}),
        json.dumps(ROW) + "\n" + json.dumps(ROW | {"id": "second"}) + "\n",
        json.dumps(ROW, indent=2),  # one memory row saved as a document
    ],
    ids=["array", "envelope", "ndjson", "single"],
)
def test_json_variants(data: str) -> None:
    episodes, rejects = read(data, name="export.csv")  # the name never decides the format
    assert rejects.height == 0
    assert rows(episodes.head(1), COLUMNS) == [EXPECTED]
    assert rows(episodes.head(1), ["observed_at", "created_at", "updated_at"]) == [
        {
            "observed_at": "2024-05-29T13:40:00+00:00",
            "created_at": "2024-05-29T13:40:00+00:00",
            "updated_at": "2024-05-29T16:26:40+00:00",
        }
    ]
    assert json.loads(episodes["metadata"][0]) == {"_source": {"source_ref": "chat:4411"}, **HISTORY}


def test_csv_rfc4180() -> None:
    data = (
        "updated_at,created_at,source_ref,source,tags,namespace,content,id\r\n"
        '1717000000000,1716990000000,chat:4411,sdk,"[""preferences"",""tone""]",my-app,'
        '"User prefers concise replies, ""no fluff"".",9b1e4c1e\r\n'
        ',1716990000000,,sdk,preferences; tone,my-app,"line one\r\nline ""two"", with comma",n2\r\n'
    )
    episodes, rejects = read(data)
    assert rejects.height == 0
    assert rows(episodes, [*COLUMNS, "updated_at"]) == [
        EXPECTED | {"updated_at": "2024-05-29T16:26:40+00:00"},
        EXPECTED
        | {
            "dump_record": 1,
            "idempotency_key": "mnueron:n2",
            "content": 'line one\r\nline "two", with comma',
            "updated_at": None,
        },
    ]
    # CSV has no metadata column: only the other fields are kept
    assert [json.loads(m) for m in episodes["metadata"]] == [
        {"_source": {"source_ref": "chat:4411"}},
        {"_source": {}},
    ]


def test_namespace_alias() -> None:
    records = [
        {k: v for k, v in ROW.items() if k != "namespace"} | {"namespace_name": "alias-only"},
        ROW | {"namespace_name": "Display Name"},
        {k: v for k, v in ROW.items() if k != "namespace"},
    ]
    episodes, rejects = read(json.dumps(records))
    assert episodes["namespace"].to_list() == ["alias-only", "my-app"]
    sources = [json.loads(m)["_source"] for m in episodes["metadata"]]
    assert sources == [
        {"source_ref": "chat:4411"},
        {"namespace_name": "Display Name", "source_ref": "chat:4411"},
    ]
    assert reject_rows(rejects) == [
        (
            2,
            "unresolved_scope",
            "scope template namespace:{namespace} needs {namespace}, which this record lacks",
        )
    ]
    csv_alias = "namespace_name,id,content,tags,created_at\nresearch,r1,a fact,,1715000000000\n"
    assert read(csv_alias)[0]["namespace"].to_list() == ["research"]


def test_epoch_ms_only() -> None:
    values: list[object] = [
        1716990000000,  # int ms
        1716990000000.5,  # float ms
        "1716990000000",  # digit string (CSV)
        "2024-05-29T13:40:00Z",  # ISO text is unambiguous
        1716990000,  # seconds: refused, never reinterpreted
        "1716990000",
        1716990000000000,  # microseconds: out of range as ms
        "tomorrow",
        False,
    ]
    records = [ROW | {"id": f"t{i}", "created_at": v, "updated_at": None} for i, v in enumerate(values)]
    episodes, rejects = read("\n".join(json.dumps(r) for r in records))
    assert rows(episodes, ["dump_record", "created_at"]) == [
        {"dump_record": 0, "created_at": "2024-05-29T13:40:00+00:00"},
        {"dump_record": 1, "created_at": "2024-05-29T13:40:00.000500+00:00"},
        {"dump_record": 2, "created_at": "2024-05-29T13:40:00+00:00"},
        {"dump_record": 3, "created_at": "2024-05-29T13:40:00+00:00"},
    ]
    seconds = "before 2001-09-09; Mnueron timestamps are epoch milliseconds (the unit is never guessed)"
    assert reject_rows(rejects) == [
        (
            4,
            "bad_timestamp",
            f"field created_at: 1716990000 as epoch ms is 1970-01-20T20:56:30+00:00, {seconds}",
        ),
        (
            5,
            "bad_timestamp",
            f"field created_at: '1716990000' as epoch ms is 1970-01-20T20:56:30+00:00, {seconds}",
        ),
        (6, "bad_timestamp", "field created_at: 1716990000000000 is out of range as epoch ms"),
        (7, "bad_timestamp", "field created_at: 'tomorrow' is not an ISO 8601 timestamp"),
        (8, "bad_timestamp", "field created_at: False is not a timestamp"),
    ]


def test_tags() -> None:
    data = HEADER + (
        'a,x,ns,"[""b"", ""a;b""]",sdk,,1716990000000,\n'
        "b,x,ns,one;two; ;three,sdk,,1716990000000,\n"
        "c,x,ns,,sdk,,1716990000000,\n"
        'd,x,ns,"[""open",sdk,,1716990000000,\n'
        'e,x,ns,"{""a"": 1}",sdk,,1716990000000,\n'
    )
    episodes, rejects = read(data)
    assert episodes["tags"].to_list() == [["b", "a;b"], ["one", "two", "three"], [], ['{"a": 1}']]
    assert reject_rows(rejects) == [
        (3, "bad_value", "field tags: '[\"open' starts like a JSON array but is not one"),
    ]
    episodes, rejects = read(json.dumps([ROW | {"tags": "one;two"}, ROW | {"tags": None}]))
    assert episodes["tags"].to_list() == [[]]
    assert reject_rows(rejects) == [
        (0, "wrong_type", "field tags is a JSON string, expected a list of strings")
    ]


def test_csv_damage_is_contained() -> None:
    data = (
        HEADER.encode()
        + b"r0,fine,ns,,sdk,,1716990000000,\n"
        + b"r1,only,three\n"
        + b'r2,"bad \xc3\x28 bytes\nacross lines",ns,,sdk,,1716990000000,\n'
        + b"r3,fine,ns,,sdk,,1716990000000,\n"
        + b'r4,"never closed,ns,,sdk,,1716990000000,\n'
        + b"r5,swallowed,ns,,sdk,,1716990000000,\n"
    )
    episodes, rejects = read(data)
    assert episodes["source_id"].to_list() == ["r0", "r3"]
    assert reject_rows(rejects) == [
        (1, "bad_value", "line 3: row has 3 fields, the header has 8"),
        (2, "invalid_utf8", "line 4: row is not valid UTF-8; bytes kept escaped"),
        (
            4,
            "malformed_document",
            "line 7: a quoted field opened in this row never closes (unexpected end of data)",
        ),
    ]
    assert rejects["raw"][1] == 'r2,"bad \\xc3( bytes\nacross lines",ns,,sdk,,1716990000000,'


def test_metadata_column_if_an_export_has_one() -> None:
    data = (
        "id,content,namespace,tags,created_at,metadata\n"
        'm1,x,ns,,1716990000000,"{""history"": [{""at"": 1716980000000, ""content"": ""old""}]}"\n'
        "m2,x,ns,,1716990000000,{not json\n"
    )
    episodes, rejects = read(data)
    assert json.loads(episodes["metadata"][0]) == {
        "_source": {},
        "history": [{"at": 1716980000000, "content": "old"}],
    }
    assert reject_rows(rejects) == [(1, "bad_value", "field metadata: '{not json' is not valid JSON")]


def test_other_systems_are_format_errors() -> None:
    memsolus_csv = (
        "id,user_id,content,priority,status,categories,created_at\nmem_1,u,x,HIGH,READY,,2025-01-01\n"
    )
    with pytest.raises(DumpFormatError, match="found a header without namespace, tags: id, user_id"):
        read(memsolus_csv)
    with pytest.raises(DumpFormatError, match=r"not a Mnueron export .*keys: orders"):
        read(json.dumps({"orders": [ROW]}, indent=2))
    with pytest.raises(DumpFormatError, match="found a header without id, content, namespace"):
        read("\n\n\n\x00")  # text, but nothing CSV can use


def test_embedding_dropped_and_scope_from_source() -> None:
    episodes, _ = read(
        json.dumps([ROW | {"embedding": [0.1] * 8, "score": 0.7}]), scope_template="{namespace}/{source}"
    )
    assert episodes["scope"].to_list() == ["my-app/sdk"]
    assert json.loads(episodes["metadata"][0])["_source"] == {"source_ref": "chat:4411", "score": 0.7}
