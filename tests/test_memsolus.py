"""Memsolus specifics: the four formats, the mapping rules, detection and safety, written inline."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pytest

from connectors import registry
from connectors.errors import DumpFormatError
from tests.connector_helpers import read_memory, reject_rows
from tests.connector_helpers import rows as connector_rows

MEMSOLUS = registry.get("memsolus")
COLUMNS = [
    "dump_record",
    "idempotency_key",
    "scope",
    "content",
    "status",
    "priority",
    "categories",
    "user_id",
    "agent_id",
    "session_id",
    "created_at",
    "updated_at",
    "observed_at",
]


def read(data: str | bytes, name: str = "dump", **kw: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    return read_memory(MEMSOLUS, data, name, **kw)


def rows(frame: pl.DataFrame, columns: list[str] = COLUMNS) -> list[dict[str, Any]]:
    return connector_rows(frame, columns)


RECORD = {
    "id": "mem_A1",
    "content": 'Prefers "dark" roast, black.',
    "user_id": "user_1",
    "agent_id": "agent_barista",
    "session_id": None,
    "priority": "high",
    "status": "CONSOLIDATED",
    "categories": ["food", "coffee"],
    "metadata": {"origin": "chat", "merged_into": "mem_A9"},
    "layer": "standard",
    "created_at": "2025-06-01T12:00:00.250Z",
    "updated_at": "2025-06-02T08:00:00+02:00",
}
EXPECTED = {
    "dump_record": 0,
    "idempotency_key": "memsolus:mem_A1",
    "scope": "user:user_1",
    "content": 'Prefers "dark" roast, black.',
    "status": "superseded",
    "priority": "HIGH",
    "categories": ["food", "coffee"],
    "user_id": "user_1",
    "agent_id": "agent_barista",
    "session_id": None,
    "created_at": "2025-06-01T12:00:00.250000+00:00",
    "updated_at": "2025-06-02T06:00:00+00:00",
    "observed_at": "2025-06-01T12:00:00.250000+00:00",
}
CSV = (
    "layer,updated_at,metadata,categories,status,priority,session_id,agent_id,user_id,content,id,created_at\r\n"
    'standard,2025-06-02T08:00:00+02:00,"{""origin"": ""chat"", ""merged_into"": ""mem_A9""}",'
    'food;coffee,CONSOLIDATED,high,,agent_barista,user_1,"Prefers ""dark"" roast, black.",mem_A1,'
    "2025-06-01T12:00:00.250Z\r\n"
)
MARKDOWN = """# Memsolus export

## mem_A1

- **user_id:** user_1
- **agent_id:** agent_barista
- **priority:** high
- **status:** CONSOLIDATED
- **categories:** food, coffee
- **metadata:** {"origin": "chat", "merged_into": "mem_A9"}
- **layer:** standard
- **created_at:** 2025-06-01T12:00:00.250Z
- **updated_at:** 2025-06-02T08:00:00+02:00

Prefers "dark" roast, black.
"""


@pytest.mark.parametrize(
    "data",
    [
        json.dumps([RECORD]),
        json.dumps({"memories": [RECORD], "count": 1}),
        json.dumps({"data": [RECORD]}),
        json.dumps(RECORD) + "\n",
        CSV,
        MARKDOWN,
    ],
    ids=["array", "memories", "data", "jsonl", "csv", "markdown"],
)
def test_every_format_gives_the_same_episode(data: str) -> None:
    episodes, rejects = read(data, name="export.txt")  # the name never decides the format
    assert rejects.height == 0
    assert rows(episodes) == [EXPECTED]
    assert json.loads(episodes["metadata"][0]) == {
        "_source": {"layer": "standard"},
        "origin": "chat",
        "merged_into": "mem_A9",
    }
    assert episodes["type"].cast(pl.String).to_list() == ["observation"]
    assert episodes["source_id"].to_list() == ["mem_A1"]


def test_statuses_and_priorities() -> None:
    records = [
        RECORD | {"id": f"mem_{i}", "status": status, "priority": priority}
        for i, (status, priority) in enumerate(
            [
                ("READY", "LOW"),
                ("pending", "Medium"),
                ("PROCESSING", None),
                ("CONSOLIDATED", "HIGH"),
                (None, ""),
                ("DELETED", "LOW"),
                ("READY", "urgent"),
            ]
        )
    ]
    episodes, rejects = read(json.dumps(records))
    assert rows(episodes, ["dump_record", "status", "priority"]) == [
        {"dump_record": 0, "status": "active", "priority": "LOW"},
        {"dump_record": 1, "status": "active", "priority": "MEDIUM"},
        {"dump_record": 2, "status": "active", "priority": None},
        {"dump_record": 3, "status": "superseded", "priority": "HIGH"},
        {"dump_record": 4, "status": "active", "priority": None},
    ]
    assert reject_rows(rejects) == [
        (5, "bad_value", "status 'DELETED' is not one of PENDING|PROCESSING|READY|CONSOLIDATED"),
        (6, "bad_value", "priority URGENT is not one of LOW|MEDIUM|HIGH"),
    ]


def test_consolidated_rows_are_superseded_not_duplicates(tmp_path: Any) -> None:
    from pipelines.store.episodes import EpisodeStore
    from pipelines.store.ingest import ingest_dump
    from pipelines.store.locations import Location

    live = RECORD | {"id": "mem_A9", "status": "READY", "content": "Prefers dark roast."}
    (tmp_path / "landing" / "memsolus").mkdir(parents=True)
    (tmp_path / "landing" / "memsolus" / "dump.json").write_text(json.dumps([RECORD, live]), encoding="utf-8")
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    result = ingest_dump(
        store, Location.from_url(str(tmp_path / "landing")), "memsolus", "dump.json", tenant_id="acme"
    )
    assert {k: result.counts[k] for k in ("read", "accepted", "rejected", "duplicate")} == {
        "read": 2,
        "accepted": 2,
        "rejected": 0,
        "duplicate": 0,
    }


def test_categories_in_text_cells() -> None:
    header = "id,user_id,content,categories,created_at\n"
    body = (
        'm1,u,a,"[""x"", ""y; z""]",2025-01-01T00:00:00Z\n'
        "m2,u,b, x ; ;y ,2025-01-01T00:00:00Z\n"
        "m3,u,c,,2025-01-01T00:00:00Z\n"
        'm4,u,d,"[""x""",2025-01-01T00:00:00Z\n'
        'm5,u,e,"[1, 2]",2025-01-01T00:00:00Z\n'
    )
    episodes, rejects = read(header + body)
    assert episodes["categories"].to_list() == [["x", "y; z"], ["x", "y"], []]
    assert reject_rows(rejects) == [
        (3, "bad_value", "field categories: '[\"x\"' starts like a JSON array but is not one"),
        (
            4,
            "wrong_type",
            "field categories is a JSON array with non-string items, expected a list of strings",
        ),
    ]


def test_csv_rows_positions_and_line_numbers() -> None:
    data = (
        b"\xef\xbb\xbfid,user_id,content,created_at\r\n"
        b'm0,u,"two\r\nlines",2025-01-01T00:00:00Z\r\n'
        b"\r\n"
        b"m1,u,caf\xe9,2025-01-01T00:00:00Z\r\n"
        b"m2,u,too,many,2025-01-01T00:00:00Z\r\n"
        b"m3,u,fine,2025-01-01T00:00:00Z\r\n"
    )
    episodes, rejects = read(data)
    assert rows(episodes, ["dump_record", "content"]) == [
        {"dump_record": 0, "content": "two\r\nlines"},
        {"dump_record": 3, "content": "fine"},
    ]
    assert reject_rows(rejects) == [
        (1, "invalid_utf8", "line 5: row is not valid UTF-8; bytes kept escaped"),
        (2, "bad_value", "line 6: row has 5 fields, the header has 4"),
    ]
    assert rejects["raw"].to_list() == [
        "m1,u,caf\\xe9,2025-01-01T00:00:00Z",
        "m2,u,too,many,2025-01-01T00:00:00Z",
    ]


def test_csv_header_decides_the_system() -> None:
    with pytest.raises(DumpFormatError, match=r"found a header without user_id: id, content, namespace"):
        read("id,content,namespace,tags,source,source_ref,created_at,updated_at\n1,a,ns,,sdk,,1,1\n")
    with pytest.raises(DumpFormatError, match="naming id twice"):
        read("id,user_id,content,created_at,id\n")
    episodes, rejects = read(" ID , User_Id,CONTENT,created_at\n")  # a header alone: nothing to read
    assert (episodes.height, rejects.height) == (0, 0)


def test_markdown_layout() -> None:
    doc = """# Memsolus export
Exported 2025-06-07.

## `mem_1`
- **user_id**: u
- **created_at**: 2025-06-01T00:00:00Z

First paragraph.

~~~
## not a heading inside a fence
~~~

---

## mem_2

- **user_id:** u
- **user_id:** v
- **created_at:** 2025-06-02T00:00:00Z

Twice.

## mem_3

- **user_id:** u
- **created_at:** 2025-06-03T00:00:00Z
- **content:** inline

Body.

##

- **user_id:** u
- **created_at:** 2025-06-04T00:00:00Z

No id.

## mem_5

- **user_id:** u
- **created_at:** 2025-06-05T00:00:00Z
- **categories:** ["a", "b"]
- **metadata:** [1, 2]

- **bold** list item in the content
"""
    episodes, rejects = read(doc, name="export.md")
    assert rows(episodes, ["dump_record", "idempotency_key", "content", "categories"]) == [
        {
            "dump_record": 0,
            "idempotency_key": "memsolus:mem_1",
            "content": "First paragraph.\n\n~~~\n## not a heading inside a fence\n~~~",
            "categories": [],
        },
        {
            "dump_record": 4,
            "idempotency_key": "memsolus:mem_5",
            "content": "- **bold** list item in the content",
            "categories": ["a", "b"],
        },
    ]
    assert json.loads(episodes["metadata"][1]) == {"_source": {"metadata": [1, 2]}}
    assert reject_rows(rejects) == [
        (1, "bad_value", "line 19: field user_id is given twice"),
        (2, "bad_value", "line 28: field content belongs in the heading or the body"),
        (3, "missing_field", "no record id"),
    ]
    assert rejects["raw"][0].startswith("## mem_2\n\n- **user_id:** u\n")


def test_markdown_that_is_not_an_export() -> None:
    with pytest.raises(DumpFormatError, match=r"first entry \('## Setup', line 3\) has no field list"):
        read("# Notes\n\n## Setup\n\nInstall it.\n")
    with pytest.raises(DumpFormatError, match="without '## <id>' entries, titled '# Shopping list'"):
        read("# Shopping list\n\n- milk\n")
    assert read("# Memsolus export\n\n0 memories\n")[0].height == 0


def test_markdown_invalid_utf8_is_one_reject() -> None:
    doc = (
        b"# Memsolus export\n\n"
        b"## m1\n\n- **user_id:** u\n- **created_at:** 2025-06-01T00:00:00Z\n\n\xff\xfe\n\n"
        b"## m2\n\n- **user_id:** u\n- **created_at:** 2025-06-01T00:00:00Z\n\nok\n"
    )
    episodes, rejects = read(doc)
    assert episodes["source_id"].to_list() == ["m2"]
    assert reject_rows(rejects) == [
        (0, "invalid_utf8", "entry at line 3 is not valid UTF-8; bytes kept escaped")
    ]


def test_timestamps_are_iso_only_and_observed_falls_back_to_updated() -> None:
    records = [
        RECORD | {"id": "a", "created_at": None, "updated_at": "2025-06-02"},
        RECORD | {"id": "b", "created_at": 1748779200},
        RECORD | {"id": "c", "created_at": "2025-06-01T12:00:00"},
        RECORD | {"id": "d", "created_at": None, "updated_at": None},
    ]
    episodes, rejects = read("\n".join(json.dumps(r) for r in records))
    assert rows(episodes, ["source_id", "observed_at", "created_at"]) == [
        {"source_id": "a", "observed_at": "2025-06-02T00:00:00+00:00", "created_at": None},
        {
            "source_id": "c",
            "observed_at": "2025-06-01T12:00:00+00:00",
            "created_at": "2025-06-01T12:00:00+00:00",
        },
    ]
    assert reject_rows(rejects) == [
        (
            1,
            "bad_timestamp",
            "field created_at: 1748779200 is a number; expected ISO 8601 text (a unit is never guessed)",
        ),
        (3, "missing_field", "no timestamp to use as observed_at"),
    ]


def test_embeddings_dropped_unknown_fields_kept_and_scope_placeholders() -> None:
    record = RECORD | {"embedding": [0.1, 0.2], "score": 0.5, "session_id": "s9"}
    episodes, _ = read(
        json.dumps([record]), scope_template="org:acme/u:{user_id}/a:{agent_id}/s:{session_id}"
    )
    assert episodes["scope"].to_list() == ["org:acme/u:user_1/a:agent_barista/s:s9"]
    assert json.loads(episodes["metadata"][0])["_source"] == {"layer": "standard", "score": 0.5}
    episodes, rejects = read(json.dumps([RECORD]), scope_template="s:{session_id}")
    assert reject_rows(rejects) == [
        (0, "unresolved_scope", "scope template s:{session_id} needs {session_id}, which this record lacks")
    ]


def test_foreign_and_binary_dumps_are_format_errors() -> None:
    with pytest.raises(
        DumpFormatError, match=r"not a Memsolus export .*found a JSON object with keys: agents"
    ):
        read(json.dumps({"agents": [], "blocks": []}))
    with pytest.raises(DumpFormatError, match="found a zip file"):
        read(b"PK\x03\x04rest of an archive")


def test_markdown_field_list_after_the_content_and_dashes_as_null() -> None:
    doc = """# Memsolus export

## mem_A

The user prefers TypeScript for new services.
Even for scripts.

- **user_id:** user_123
- **agent_id:** —
- **session_id:**
- **priority:** HIGH
- **created_at:** 2025-06-01T12:00:00.000Z

---

## mem_B

- **user_id:** user_123
- **agent_id:** –
- **created_at:** 2025-06-02T12:00:00Z

Field list first, as before.

## mem_C

Pages go to the billing on-call channel.

- **user_id:** user_456
- **priority** HIGH
- **created_at:** 2025-06-03T11:00:00Z

## mem_D

A paragraph with no field list at all.
"""
    episodes, rejects = read(doc, name="export.md")
    assert rows(episodes, ["dump_record", "content", "user_id", "agent_id", "session_id", "priority"]) == [
        {
            "dump_record": 0,
            "content": "The user prefers TypeScript for new services.\nEven for scripts.",
            "user_id": "user_123",
            "agent_id": None,
            "session_id": None,
            "priority": "HIGH",
        },
        {
            "dump_record": 1,
            "content": "Field list first, as before.",
            "user_id": "user_123",
            "agent_id": None,
            "session_id": None,
            "priority": None,
        },
    ]
    assert reject_rows(rejects) == [
        (2, "bad_value", "line 29: '- **priority** HIGH' is not a field line '- **name:** value'"),
        (
            3,
            "missing_field",
            "entry mem_D at line 32 has no field list ('- **name:** value' lines) before or after its text",
        ),
    ]


def test_markdown_export_whose_first_entry_has_no_fields_is_still_read() -> None:
    doc = (
        "# Memsolus export\n\n## mem_X\n\nNo fields here.\n\n"
        "## mem_Y\n\nText.\n\n- **user_id:** u\n- **created_at:** 2025-06-01T00:00:00Z\n"
    )
    episodes, rejects = read(doc, name="export.md")
    assert episodes["source_id"].to_list() == ["mem_Y"]
    assert reject_rows(rejects)[0][:2] == (0, "missing_field")
