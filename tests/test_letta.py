"""Letta specifics: both agent-file generations, where the text really is, identity keys that
carry the file's hash, passages, detection, and what survives a broken document."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import fsspec
import polars as pl
import pytest

from connectors import registry
from connectors.errors import DumpFormatError
from tests.conftest import FIXTURES
from tests.test_connectors_conformance import read_all

LETTA = registry.get("letta")


def text_part(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value, "signature": None}


def message(i: int, role: str, content: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "id": f"message-{i}",
        "role": role,
        "content": content,
        "agent_id": "agent-0",
        "created_at": f"2025-10-10T07:14:{i:02d}+00:00",
    } | fields


def send(text: str) -> list[dict[str, Any]]:
    arguments = json.dumps({"message": text, "request_heartbeat": False})
    return [{"id": "c1", "type": "function", "function": {"name": "send_message", "arguments": arguments}}]


def agent_file(messages: list[Any], **top: Any) -> dict[str, Any]:
    agent = {
        "id": "agent-0",
        "name": "planner",
        "agent_type": "memgpt_v2_agent",
        "system": "You plan.",
        "tags": ["user:u-9"],
        "block_ids": ["block-0"],
        "in_context_message_ids": ["message-1"],
        "messages": messages,
    }
    return {
        "agents": [agent],
        "blocks": [{"id": "block-0", "label": "human", "value": "Name: Ada.", "limit": 5000}],
        "created_at": "2025-10-10T08:00:00+00:00",
    } | top


def write(tmp_path: Path, name: str, doc: Any, *, indent: int | None = 2) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc, indent=indent), encoding="utf-8")
    return path


def frames(path: Path | str, **kw: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    batches = read_all(LETTA, path, **kw)
    return pl.concat([b.episodes for b in batches]), pl.concat([b.rejects for b in batches])


def reasons(rejects: pl.DataFrame) -> dict[int, str]:
    return dict(zip(rejects["dump_record"], rejects["reason"].cast(pl.String), strict=True))


def test_keys_carry_the_hash_of_the_file_bytes(tmp_path: Path) -> None:
    doc = agent_file([message(1, "user", [text_part("hi")])])
    pretty = write(tmp_path, "pretty.af", doc)
    compact = write(tmp_path, "compact.af", doc, indent=None)
    sha = hashlib.sha256(pretty.read_bytes()).hexdigest()
    first, _ = frames(pretty)
    assert first["idempotency_key"].to_list() == [
        f"letta:{sha}:agent-0",
        f"letta:{sha}:message-1",
        f"letta:{sha}:block-0",
    ]
    assert first["source_id"].to_list() == [f"{sha}:agent-0", f"{sha}:message-1", f"{sha}:block-0"]
    again, _ = frames(pretty)  # the same file again: the same keys and episode ids (exactly once)
    assert again["episode_id"].to_list() == first["episode_id"].to_list()
    other, _ = frames(compact)  # another export (other bytes): `message-1` there is another record
    assert set(other["episode_id"]).isdisjoint(first["episode_id"])
    assert other["content"].to_list() == first["content"].to_list()


def test_double_encoded_file_reads_like_the_plain_one(tmp_path: Path) -> None:
    doc = agent_file([message(1, "user", [text_part("hi")])])
    plain = write(tmp_path, "plain.af", doc)
    double = tmp_path / "double.af"
    double.write_bytes(b"\xef\xbb\xbf" + json.dumps(plain.read_text(encoding="utf-8")).encode("utf-8"))
    columns = ["type", "role", "content", "scope", "observed_at", "metadata"]
    assert frames(double)[0].select(columns).equals(frames(plain)[0].select(columns))


def test_text_is_taken_where_letta_put_it(tmp_path: Path) -> None:
    reasoning = {"type": "reasoning", "reasoning": "Be brief.", "is_native": True}
    messages = [
        message(0, "system", [text_part("compiled prompt")]),
        message(
            1, "user", [text_part(json.dumps({"type": "user_message", "message": "hello", "time": "x"}))]
        ),
        message(2, "assistant", [reasoning], tool_calls=send("Hi there!")),
        message(3, "tool", [text_part('{"status": "OK"}')], name="send_message"),
        message(4, "user", [text_part(json.dumps({"type": "heartbeat", "reason": "automated"}))]),
        message(5, "user", [text_part(json.dumps({"type": "system_alert", "message": "Summary: said hi."}))]),
        message(6, "assistant", [text_part("I should remember this.")], tool_calls=None),
        message(7, "function", [text_part("42 results")], name="archival_memory_search"),
    ]
    episodes, rejects = frames(write(tmp_path, "a.af", agent_file(messages)))
    got = episodes.filter(pl.col("type") == "message").select("role", "content", "author").rows()
    assert got == [
        ("user", "hello", None),
        ("assistant", "Hi there!", "planner"),
        ("tool", "42 results", "archival_memory_search"),
    ]
    assert reasons(rejects) == {
        1: "hidden_node",
        4: "hidden_node",
        5: "hidden_node",
        6: "hidden_node",
        7: "hidden_node",
    }
    assert rejects.filter(pl.col("dump_record") == 7)["detail"].item() == (
        "agents[0].messages[6] (message-6): inner thoughts, not shown to the user "
        "(this agent speaks through send_message)"
    )
    assistant = json.loads(episodes.filter(pl.col("role") == "assistant")["metadata"].item())
    assert assistant["_source"]["content"] == [reasoning]  # the inner thoughts stay in metadata
    assert assistant["_letta"] == {"in_context": False}


def test_an_agent_without_send_message_speaks_in_its_text(tmp_path: Path) -> None:
    doc = agent_file([message(1, "assistant", [text_part("Your flight is at 9.")])])
    doc["agents"][0]["agent_type"] = "letta_v1_agent"
    episodes, _ = frames(write(tmp_path, "v1agent.af", doc))
    row = episodes.filter(pl.col("type") == "message").row(0, named=True)
    assert (row["role"], row["content"]) == ("assistant", "Your flight is at 9.")
    assert json.loads(row["metadata"]) == {
        "_source": {"type": "message", "agent_id": "agent-0"},
        "_letta": {"in_context": True},
    }


def test_legacy_file_naive_times_and_context_indices(tmp_path: Path) -> None:
    legacy = {
        "agent_type": "memgpt_agent",
        "name": "sam",
        "system": "You are MemGPT.",
        "created_at": "2025-04-01T03:47:19",
        "version": "0.6.47",
        "core_memory": [{"label": "human", "value": "Chad.", "created_at": "2025-04-01T03:47:19.5"}],
        "in_context_message_indices": [1],
        "messages": [
            {"role": "user", "content": [text_part("first")], "created_at": "2025-04-01T03:48:00"},
            {"role": "user", "content": [text_part("second")], "created_at": "2025-04-01T03:49:00.25"},
        ],
        "tags": [{"tag": "user:chad"}],
        "tool_exec_environment_variables": [{"key": "API_KEY", "value": "sk-123"}],
    }
    episodes, rejects = frames(write(tmp_path, "legacy.af", legacy), scope_template="u:{user_id}/{agent}")
    assert rejects.height == 0
    assert episodes.select("type", "content", "scope").rows() == [
        ("document", "You are MemGPT.", "u:chad/sam"),
        ("message", "first", "u:chad/sam"),
        ("message", "second", "u:chad/sam"),
        ("document", "Chad.", "u:chad/sam"),
    ]
    assert [t.isoformat() for t in episodes["observed_at"]] == [
        "2025-04-01T03:47:19+00:00",
        "2025-04-01T03:48:00+00:00",
        "2025-04-01T03:49:00.250000+00:00",
        "2025-04-01T03:47:19.500000+00:00",
    ]
    assert episodes["source_id"].str.split(":").list.last().to_list() == [
        "agent",
        "messages[0]",
        "messages[1]",
        "core_memory[0]",
    ]
    in_context = [json.loads(m)["_letta"]["in_context"] for m in episodes["metadata"][1:3]]
    assert in_context == [False, True]
    agent_meta = json.loads(episodes["metadata"][0])["_source"]
    assert agent_meta["tool_exec_environment_variables"] == [{"key": "API_KEY", "value": "<redacted>"}]
    assert agent_meta["in_context_message_indices"] == [1]


def test_configuration_records_are_skips_and_mcp_settings_are_not_kept(tmp_path: Path) -> None:
    doc = agent_file(
        [],
        tools=[{"id": "tool-0", "name": "send_message", "json_schema": {}}],
        mcp_servers=[{"id": "mcp_server-0", "server_name": "maps", "token": "secret-token"}],
    )
    _, rejects = frames(write(tmp_path, "config.af", doc))
    assert rejects.select("reason", "detail").rows() == [
        ("hidden_node", "tools[0] (tool send_message): agent configuration, not memory"),
        (
            "hidden_node",
            "mcp_servers[0] (MCP server maps): agent configuration, not memory; "
            "its settings may hold credentials and are not kept",
        ),
    ]
    assert rejects["raw"].to_list()[1] is None
    assert "secret-token" not in "".join(r for r in rejects["raw"].to_list() if r)


def test_embedding_vectors_are_dropped_everywhere(tmp_path: Path) -> None:
    passages = [
        {"id": "passage-1", "text": "kept", "archive_id": "archive-1", "embedding": [0.5] + [0.0] * 4095,
         "created_at": "2025-10-11T08:00:00Z"},
        {"id": "passage-2", "text": "bad time", "archive_id": "archive-1", "embedding": [0.25] * 4096,
         "created_at": 1717000000},
    ]  # fmt: skip
    episodes, rejects = frames(write(tmp_path, "p.json", passages))
    assert json.loads(episodes["metadata"].item()) == {"_source": {"archive_id": "archive-1"}}
    assert "embedding" not in rejects["raw"].item()
    doc = agent_file([])
    doc["agents"][0]["embedding"] = "openai/text-embedding-3-small"  # a model handle, not a vector
    agent = frames(write(tmp_path, "a.af", doc))[0].row(0, named=True)
    assert json.loads(agent["metadata"])["_source"]["embedding"] == "openai/text-embedding-3-small"


def test_passages_tombstones_and_both_owner_fields(tmp_path: Path) -> None:
    lines = [
        {"id": "passage-1", "text": "old server", "agent_id": "agent-7", "created_at": "2025-04-01T03:55:00"},
        {"id": "passage-2", "text": "deleted", "archive_id": "archive-3", "is_deleted": True,
         "created_at": "2025-10-01T00:00:00+00:00", "tags": ["user:u-1"]},
    ]  # fmt: skip
    path = tmp_path / "passages.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    episodes, _ = frames(path, scope_template="{agent}")
    assert episodes.select("idempotency_key", "status", "scope", "agent_id", "user_id").rows() == [
        ("letta-passage:passage-1", "active", "agent-7", "agent-7", None),
        ("letta-passage:passage-2", "deleted", "archive-3", None, "u-1"),
    ]


def test_truncated_agent_file_keeps_the_finished_records(tmp_path: Path) -> None:
    messages = [message(i, "user", [text_part(f"turn {i}")]) for i in range(1, 5)]
    text = json.dumps(agent_file(messages), indent=2)
    path = tmp_path / "cut.af"
    path.write_text(text[: text.index("turn 3") + 3], encoding="utf-8")
    episodes, rejects = frames(path)
    assert episodes["content"].to_list() == ["turn 1", "turn 2"]  # the agent itself is unfinished
    assert episodes["scope"].unique().to_list() == ["agent:planner"]
    assert reasons(rejects) == {2: "truncated_document"}
    assert rejects["detail"].item().endswith("it breaks off inside agents[0].messages[2].content[0]")


def test_memory_filesystem(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/letta/agent.af", json.dumps(agent_file([message(1, "user", [text_part("hi")])])).encode())
    batches = list(LETTA.read(fs, "/letta/agent.af", tenant_id="acme", batch_rows=1))
    assert [b.read for b in batches] == [1, 1, 1]
    assert batches[0].episodes["dump_uri"].item() == "memory:///letta/agent.af"


def test_block_without_agent_in_a_multi_agent_file_is_unresolved(tmp_path: Path) -> None:
    doc = agent_file([])
    doc["agents"].append({"id": "agent-1", "name": "other", "system": "Other.", "block_ids": []})
    doc["blocks"].append({"id": "block-9", "label": "orphan", "value": "Nobody uses me."})
    episodes, rejects = frames(write(tmp_path, "multi.af", doc))
    assert episodes.select("source_id", "scope").rows()[-1][1] == "agent:planner"
    assert rejects.select("reason", "detail").rows() == [
        ("unresolved_scope", "scope template agent:{agent} needs {agent}, which this record lacks")
    ]


@pytest.mark.parametrize(
    ("name", "content", "found"),
    [
        ("orders.jsonl", b'{"order": 1}\n{"order": 2}\n', "records with keys: order"),
        ("agent.af", b'{"name": "x", "memory": {}}', "a JSON object with keys: name, memory"),
        ("agent.af", b'"just a string"', "a JSON string"),
        ("x.json", b"[1, 2]\n", None),
    ],
)
def test_detection(tmp_path: Path, name: str, content: bytes, found: str | None) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    if found is None:  # an array whose items are not objects: rejects, not a foreign format
        _, rejects = frames(path)
        assert rejects["reason"].cast(pl.String).to_list() == ["not_an_object", "not_an_object"]
        return
    with pytest.raises(DumpFormatError, match=f"not a Letta .*found {found}"):
        read_all(LETTA, path)


def test_zip_is_not_an_agent_file(tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("agent.af", (FIXTURES / "letta" / "trip_planner_v2.af").read_text(encoding="utf-8"))
    with pytest.raises(DumpFormatError, match="found a zip file"):
        read_all(LETTA, path)
