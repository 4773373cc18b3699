"""Zep / Graphiti specifics, written inline: detection, the role rule, the bi-temporal mapping,
envelope context, directory records, and the message / episode overlap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec
import polars as pl
import pytest

from connectors import registry
from connectors.errors import DumpFormatError
from tests.test_connectors_conformance import read_all, totals

ZEP = registry.get("zep")
FIXED = "org:acme/user:priya"


def edge(i: int, **fields: object) -> dict[str, object]:
    return {
        "uuid": f"e-{i}",
        "name": "LIKES",
        "fact": f"Priya likes thing {i}",
        "source_node_uuid": "n-1",
        "target_node_uuid": "n-2",
        "created_at": "2025-02-10T14:03:11Z",
    } | fields


def message(i: int, **fields: object) -> dict[str, object]:
    return {"uuid": f"m-{i}", "content": f"hello {i}", "created_at": "2025-02-10T14:03:09Z"} | fields


def write(tmp_path: Path, body: Any, name: str = "dump.json") -> Path:
    dump = tmp_path / name
    if name.endswith(".jsonl"):
        dump.write_text("\n".join(json.dumps(r) for r in body) + "\n", encoding="utf-8")
    else:
        dump.write_text(json.dumps(body), encoding="utf-8")
    return dump


def episodes(path: Path, template: str = FIXED, **kw: object) -> list[dict[str, Any]]:
    batches = read_all(ZEP, path, scope_template=template, **kw)
    return pl.concat([b.episodes for b in batches]).to_dicts()


def rejects(path: Path, template: str = FIXED) -> dict[int, tuple[str, str]]:
    batches = read_all(ZEP, path, scope_template=template)
    read, accepted, rejected = totals(batches)
    assert read == accepted + rejected
    frame = pl.concat([b.rejects for b in batches])
    return {r["dump_record"]: (r["reason"], r["detail"]) for r in frame.to_dicts()}


def test_bitemporal_mapping_and_status(tmp_path: Path) -> None:
    dump = write(
        tmp_path,
        [
            edge(0, valid_at=None, invalid_at=None, expired_at=None),
            edge(1, valid_at="2023-09-01T00:00:00Z", invalid_at="2025-01-31T00:00:00Z", expired_at=None),
            edge(
                2,
                valid_at="2023-09-01T00:00:00Z",
                invalid_at="2025-01-31T00:00:00Z",
                expired_at="2025-02-10T14:05:40.019377Z",
            ),
        ],
    )
    rows = episodes(dump)
    got = [(r["status"], r["valid_from"], r["valid_to"], r["recorded_at"], r["superseded_at"]) for r in rows]
    iso = [[v.isoformat() if v is not None else None for v in row[1:]] for row in got]
    assert [g[0] for g in got] == ["active", "active", "superseded"]
    assert iso == [
        [None, None, "2025-02-10T14:03:11+00:00", None],
        ["2023-09-01T00:00:00+00:00", "2025-01-31T00:00:00+00:00", "2025-02-10T14:03:11+00:00", None],
        [
            "2023-09-01T00:00:00+00:00",
            "2025-01-31T00:00:00+00:00",
            "2025-02-10T14:03:11+00:00",
            "2025-02-10T14:05:40.019377+00:00",
        ],
    ]
    assert [r["idempotency_key"] for r in rows] == ["zep-edge:e-0", "zep-edge:e-1", "zep-edge:e-2"]
    assert {r["type"] for r in rows} == {"observation"}
    assert rows[0]["categories"] == ["LIKES"]


def test_go_nanoseconds_and_graphiti_reference_time(tmp_path: Path) -> None:
    dump = write(
        tmp_path,
        [
            edge(0, created_at="2024-05-01T12:34:56.123456789Z"),
            edge(1, created_at="2024-05-01T12:34:56.1234567+02:00", reference_time="2024-05-01T08:00:00Z"),
        ],
    )
    rows = episodes(dump)
    assert [r["observed_at"].isoformat() for r in rows] == [
        "2024-05-01T12:34:56.123456+00:00",
        "2024-05-01T08:00:00+00:00",
    ]
    assert rows[1]["created_at"].isoformat() == "2024-05-01T10:34:56.123456+00:00"


def test_role_rule_across_generations(tmp_path: Path) -> None:
    dump = write(
        tmp_path,
        {
            "messages": [
                message(0, role="john", role_type="user"),  # v2 / CE: role is the speaker
                message(1, role="Concierge", role_type="function"),
                message(2, role="", role_type="norole"),
                message(3, role="assistant", name="TravelBot"),  # v3+: name is the speaker
                message(4, role="system"),
                message(5, role="USER", name="Priya"),
                message(6, role="john"),  # v3 shape with a name where the role goes
            ]
        },
    )
    rows = episodes(dump)
    assert [(r["dump_record"], r["role"], r["author"]) for r in rows] == [
        (0, "user", "john"),
        (1, "tool", "Concierge"),
        (2, None, None),
        (3, "assistant", "TravelBot"),
        (4, "system", None),
        (5, "user", "Priya"),
    ]
    assert rejects(dump) == {
        6: ("bad_value", "field role: 'john' is not one of norole|system|assistant|user|function|tool")
    }


def test_envelope_ids_fill_records_wherever_they_sit(tmp_path: Path) -> None:
    """v3 ``thread.get`` puts ``user_id`` after the messages; records without ids take it."""
    dump = write(
        tmp_path,
        {
            "messages": [message(0, role="user"), message(1, role="assistant", user_id="other")],
            "row_count": 2,
            "user_id": "priya",
            "thread_id": "thr-9",
        },
    )
    rows = episodes(dump, "org:acme/{owner}/thread:{session_id}")
    assert [(r["scope"], r["user_id"], r["session_id"]) for r in rows] == [
        ("org:acme/user:priya/thread:thr-9", "priya", "thr-9"),
        ("org:acme/user:other/thread:thr-9", "other", "thr-9"),
    ]


def test_owner_placeholder_prefers_the_user_then_the_graph(tmp_path: Path) -> None:
    dump = write(
        tmp_path,
        {
            "items": [
                edge(0, user_uuid="u-uuid", graph_uuid="g-uuid"),
                edge(1, graph_uuid="g-uuid"),
                edge(2, group_id="acme-support"),
                edge(3),
            ],
            "next_cursor": None,
        },
    )
    rows = episodes(dump, "{owner}")
    assert [r["scope"] for r in rows] == ["user:u-uuid", "graph:g-uuid", "graph:acme-support"]
    assert rejects(dump, "{owner}") == {
        3: ("unresolved_scope", "scope template {owner} needs {owner}, which this record lacks")
    }
    by_group = episodes(dump, "group:{group_id}")
    assert [r["scope"] for r in by_group] == ["group:g-uuid", "group:g-uuid", "group:acme-support"]


def test_episode_types_and_the_message_overlap(tmp_path: Path) -> None:
    """A message episode and the thread message it came from share one idempotency key."""
    msgs = write(tmp_path, {"messages": [message(0, role="user", name="Priya")]}, "messages.json")
    eps = write(
        tmp_path,
        {
            "episodes": [
                message(0, source="message", role="Priya", role_type="user", thread_id="thr-1"),
                message(1, source="text", source_description="Policy handbook"),
                message(2, source="json"),
                message(3, source="fact_triple"),
                message(4, source="email"),
                message(5, role="assistant", role_name="TravelBot", reference_time="2025-01-01T00:00:00Z"),
                message(6),
            ]
        },
        "episodes.json",
    )
    (from_messages,) = episodes(msgs)
    rows = episodes(eps)
    assert from_messages["idempotency_key"] == rows[0]["idempotency_key"] == "zep-message:m-0"
    assert from_messages["episode_id"] == rows[0]["episode_id"]
    assert [(r["type"], r["idempotency_key"], r["role"], r["author"], r["source"]) for r in rows] == [
        ("message", "zep-message:m-0", "user", "Priya", None),
        ("document", "zep-episode:m-1", None, None, "Policy handbook"),
        ("document", "zep-episode:m-2", None, None, None),
        ("observation", "zep-episode:m-3", None, None, None),
        ("document", "zep-episode:m-4", None, None, None),
        ("message", "zep-message:m-5", "assistant", "TravelBot", None),
        ("document", "zep-episode:m-6", None, None, None),
    ]
    assert rows[5]["observed_at"].isoformat() == "2025-01-01T00:00:00+00:00"
    assert json.loads(rows[4]["metadata"]) == {"_source": {"source": "email"}}


def test_graphiti_episode_time_and_embeddings_dropped(tmp_path: Path) -> None:
    dump = write(
        tmp_path,
        [
            {
                "uuid": "ep-1",
                "name": "chat-1",
                "group_id": "g",
                "source": "message",
                "content": "Jonas: hi\nBot: hello",
                "created_at": "2025-03-02T08:59:41+00:00",
                "valid_at": "2025-03-01T16:20:00+00:00",
                "episode_metadata": {"ticket": "SUP-1"},
                "name_embedding": [0.1, 0.2],
            },
            edge(0, group_id="g", fact_embedding=[0.1, 0.2, 0.3], embedding=[1.0]),
        ],
    )
    ep, ed = episodes(dump)
    assert ep["observed_at"].isoformat() == "2025-03-01T16:20:00+00:00"
    assert ep["valid_from"] is None
    assert json.loads(ep["metadata"]) == {
        "ticket": "SUP-1",
        "_source": {"name": "chat-1", "group_id": "g", "source": "message"},
    }
    assert "embedding" not in ed["metadata"]


def test_directory_records_are_counted_skips(tmp_path: Path) -> None:
    dump = write(
        tmp_path,
        [
            {"uuid": "u-1", "user_id": "priya", "email": "p@example.org"},
            {"uuid": "s-1", "session_id": "sess-1", "user_id": "priya"},
            {"uuid": "g-1", "group_id": "acme", "name": "Acme", "description": "shared"},
            {"uuid": "n-1", "name": "Priya", "summary": "A data engineer", "labels": ["Person"]},
            edge(0),
        ],
        "mixed.jsonl",
    )
    got = rejects(dump)
    assert {pos: reason for pos, (reason, _) in got.items()} == {
        0: "not_memory",
        1: "not_memory",
        2: "not_memory",
        3: "not_memory",
    }
    assert got[1][1] == "Zep thread s-1 is a directory record, not memory content: not imported"
    assert [r["dump_record"] for r in episodes(dump)] == [4]


def test_search_result_lists_read_in_document_order(tmp_path: Path) -> None:
    dump = write(
        tmp_path,
        {
            "edges": [edge(0)],
            "nodes": [{"uuid": "n-1", "summary": "s"}],
            "episodes": [message(1, source="text")],
        },
    )
    rows = episodes(dump)
    assert [(r["dump_record"], r["idempotency_key"]) for r in rows] == [
        (0, "zep-edge:e-0"),
        (2, "zep-episode:m-1"),
    ]
    assert rejects(dump)[1][0] == "not_memory"


def test_single_record_and_legacy_facts(tmp_path: Path) -> None:
    single = tmp_path / "edge.json"
    single.write_text(json.dumps(edge(0, episodes=["ep-1", "ep-2"]), indent=2), encoding="utf-8")
    assert [r["idempotency_key"] for r in episodes(single)] == ["zep-edge:e-0"]
    facts = write(
        tmp_path, [{"uuid": "f-1", "created_at": "2024-02-03T18:22:07.5Z", "fact": "x", "rating": 0.9}]
    )
    (row,) = episodes(facts)
    assert (row["idempotency_key"], row["type"]) == ("zep-fact:f-1", "observation")
    assert json.loads(row["metadata"]) == {"_source": {"rating": 0.9}}


@pytest.mark.parametrize(
    ("body", "found"),
    [
        ({"orders": [{"id": 1}]}, "a JSON object with keys: orders"),
        ([{"id": "m1", "memory": "tea", "user_id": "u"}], "records with keys: id, memory, user_id"),
        ({"results": [{"id": "m1", "memory": "tea"}]}, "records with keys: id, memory"),
    ],
)
def test_foreign_dumps_are_format_errors(tmp_path: Path, body: Any, found: str) -> None:
    with pytest.raises(DumpFormatError, match=f"dump.json: not a Zep .*found {found}"):
        read_all(ZEP, write(tmp_path, body))


def test_unknown_record_among_zep_records_is_a_reject(tmp_path: Path) -> None:
    dump = write(tmp_path, [edge(0), {"id": 7, "memory": "tea"}, "text", message(3, role="user")])
    assert rejects(dump) == {
        1: ("unknown_type", "record is no Zep edge, episode, message, user or thread (keys: id, memory)"),
        2: ("not_an_object", "record is a JSON string, not an object"),
    }


def test_empty_lists_and_content(tmp_path: Path) -> None:
    assert totals(read_all(ZEP, write(tmp_path, {"edges": [], "total_count": 0}))) == (0, 0, 0)
    dump = write(tmp_path, [edge(0, fact="  "), message(1, role="user", content="")], "e.json")
    assert rejects(dump) == {
        0: ("missing_field", "field fact is empty"),
        1: ("missing_field", "field content is empty"),
    }


def test_truncated_page_keeps_records_before_the_break(tmp_path: Path) -> None:
    text = json.dumps({"messages": [message(i, role="user") for i in range(3)], "user_id": "priya"})
    dump = tmp_path / "page.json"
    dump.write_text(text[: text.index('"hello 2"')], encoding="utf-8")
    assert [r["dump_record"] for r in episodes(dump)] == [0, 1]
    assert rejects(dump)[2][0] == "truncated_document"  # the truth: the file is cut short


def test_reads_from_memory_filesystem_in_bounded_batches() -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/zep/edges.json", json.dumps({"edges": [edge(i) for i in range(25)]}).encode())
    batches = list(ZEP.read(fs, "/zep/edges.json", tenant_id="acme", scope_template=FIXED, batch_rows=10))
    assert [b.read for b in batches] == [10, 10, 5]
    assert batches[0].episodes["dump_uri"][0] == "memory:///zep/edges.json"


def test_a_message_page_takes_its_session_from_the_dump_path(tmp_path: Path) -> None:
    """A v2 ``MessageListResponse`` page has no session id: the path it was saved under does."""
    from pipelines.orchestration.resources import ImportSettings
    from pipelines.store.episodes import EpisodeStore
    from pipelines.store.ingest import ingest_dump
    from pipelines.store.locations import Location

    page = {"messages": [message(1, role="Priya", role_type="user")], "row_count": 1, "total_count": 1}
    folder = tmp_path / "landing" / "zep" / "users" / "priya" / "sessions" / "s-42"
    folder.mkdir(parents=True)
    write(folder, page, "page-1.json")
    settings = ImportSettings(
        tenant_id="acme",
        scope_templates=json.dumps(
            {"zep/users/{user_id}/sessions/{session_id}/*.json": "user:{user_id}/session:{session_id}"}
        ),
    )
    relpath = "users/priya/sessions/s-42/page-1.json"
    assert settings.path_fields("zep", relpath) == {"user_id": "priya", "session_id": "s-42"}
    result = ingest_dump(
        EpisodeStore.from_url(str(tmp_path / "store")),
        Location.from_url(str(tmp_path / "landing")),
        "zep",
        relpath,
        tenant_id="acme",
        scope_template=settings.scope_template("zep", relpath),
        path_fields=settings.path_fields("zep", relpath),
    )
    assert result.counts["accepted"] == 1
    row = result.preview.row(0, named=True)
    assert (row["scope"], row["user_id"], row["session_id"]) == ("user:priya/session:s-42", "priya", "s-42")


def test_path_fields_fill_only_what_the_record_lacks(tmp_path: Path) -> None:
    page = {"messages": [message(1, role="user"), message(2, role="user", session_id="own")]}
    dump = write(tmp_path, page, "page.json")
    rows = episodes(dump, "session:{session_id}", path_fields={"session_id": "s-42"})
    assert [(r["scope"], r["session_id"]) for r in rows] == [("session:s-42", "s-42"), ("session:own", "own")]
