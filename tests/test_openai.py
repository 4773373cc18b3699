"""OpenAI specifics, written inline: tree walk, memory writes, hidden nodes, layouts, zips, safety."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import fsspec
import polars as pl
import pytest

from connectors import registry
from connectors.errors import DumpFormatError
from pipelines.store.catalog import build_catalog, connect
from pipelines.store.episodes import EpisodeStore
from pipelines.store.ingest import ingest_dump
from pipelines.store.locations import Location
from tests.conftest import put
from tests.test_connectors_conformance import read_all, totals

OPENAI = registry.get("openai")


def message(
    mid: str, role: str, text: str | None = None, t: float | str | None = 1717000000.0, **kw: Any
) -> Any:
    return {
        "id": mid,
        "author": {"role": role, "name": kw.pop("name", None), "metadata": {}},
        "create_time": t,
        "content": kw.pop("content", {"content_type": "text", "parts": [text]}),
        "metadata": kw.pop("metadata", {}),
        "recipient": kw.pop("recipient", "all"),
        **kw,
    }


def conversation(cid: str, nodes: list[tuple[str, str | None, Any]], current: str | None, **kw: Any) -> Any:
    mapping = {nid: {"id": nid, "parent": parent, "children": [], "message": m} for nid, parent, m in nodes}
    for nid, parent, _ in nodes:
        if parent is not None:
            mapping[parent]["children"].append(nid)
    return {"id": cid, "create_time": 1716000000.5, "current_node": current, "mapping": mapping, **kw}


def ingest(path: Path | str, fs: Any = None, **kw: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    fs = fs or fsspec.filesystem("file")
    kw.setdefault("tenant_id", "acme")
    batches = list(OPENAI.read(fs, str(path), **kw))
    read, accepted, rejected = totals(batches)
    assert read == accepted + rejected
    episodes = pl.concat([b.episodes for b in batches]) if batches else pl.DataFrame()
    rejects = pl.concat([b.rejects for b in batches]) if batches else pl.DataFrame()
    return episodes, rejects


def write(tmp_path: Path, doc: Any, name: str = "conversations.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def by_node(episodes: pl.DataFrame, column: str) -> dict[str, Any]:
    keys = episodes["idempotency_key"].str.split(":").list.last()
    return dict(zip(keys, episodes[column], strict=True))


def reasons(rejects: pl.DataFrame) -> dict[int, str]:
    return dict(zip(rejects["dump_record"], rejects["reason"].cast(pl.String), strict=True))


BRANCHED = conversation(
    "c1",
    [
        ("root", None, None),
        ("u1", "root", message("u1", "user", "question")),
        ("a1", "u1", message("a1", "assistant", "first answer")),
        ("a2", "u1", message("a2", "assistant", "regenerated answer")),
        ("u2", "a2", message("u2", "user", "follow-up")),
        ("u2-edit", "a2", message("u2-edit", "user", "edited follow-up")),
        ("a3", "u2-edit", message("a3", "assistant", "final")),
    ],
    current="a3",
)


def test_transcript_is_the_path_from_current_node_and_branches_are_superseded(tmp_path: Path) -> None:
    episodes, rejects = ingest(write(tmp_path, [BRANCHED]))
    assert by_node(episodes, "status") == {
        "u1": "active",
        "a1": "superseded",
        "a2": "active",
        "u2": "superseded",
        "u2-edit": "active",
        "a3": "active",
    }
    assert set(episodes["session_id"]) == {"c1"}
    assert episodes["idempotency_key"][0] == "chatgpt:c1:u1"
    assert episodes["source_id"][0] == "c1:u1"
    assert reasons(rejects) == {0: "empty_node"}
    assert json.loads(episodes["metadata"][1])["_source"]["node"] == {"parent": "u1", "children": []}


def test_without_a_usable_current_node_every_message_is_active(tmp_path: Path) -> None:
    loop = conversation(
        "c2",
        [("x", "y", message("x", "user", "one")), ("y", "x", message("y", "assistant", "two"))],
        current="x",  # parents form a cycle: the walk stops, nothing hangs
    )
    missing = BRANCHED | {"id": "c3", "current_node": "gone"}
    episodes, _ = ingest(write(tmp_path, [loop, missing]))
    status = dict(zip(episodes["idempotency_key"], episodes["status"], strict=True))
    assert status["chatgpt:c2:x"] == status["chatgpt:c2:y"] == "active"
    assert {v for k, v in status.items() if k.startswith("chatgpt:c3:")} == {"active"}


def test_memory_writes_are_observations_and_hidden_nodes_are_skipped(tmp_path: Path) -> None:
    nodes = [
        ("root", None, None),
        ("sys", "root", message("sys", "system", "")),
        (
            "inst",
            "sys",
            message(
                "inst",
                "system",
                t=None,
                metadata={"is_user_system_message": True},
                content={
                    "content_type": "user_editable_context",
                    "user_profile": "Cellist.",
                    "user_instructions": "Be brief.",
                },
            ),
        ),
        (
            "ctx",
            "inst",
            message(
                "ctx",
                "system",
                content={
                    "content_type": "model_editable_context",
                    "model_set_context": "User is vegetarian.",
                },
                metadata={"is_visually_hidden_from_conversation": True},
            ),
        ),
        (
            "ctx0",
            "ctx",
            message(
                "ctx0", "system", content={"content_type": "model_editable_context", "model_set_context": ""}
            ),
        ),
        ("u1", "ctx0", message("u1", "user", "I moved to Lisbon")),
        ("bio", "u1", message("bio", "assistant", "User lives in Lisbon.", recipient="bio")),
        ("ok", "bio", message("ok", "tool", "Model set context updated.", name="bio", recipient="assistant")),
        (
            "py",
            "ok",
            message("py", "assistant", content={"content_type": "code", "text": "1+1"}, recipient="python"),
        ),
        ("think", "py", message("think", "assistant", content={"content_type": "thoughts", "thoughts": []})),
        (
            "quiet",
            "think",
            message("quiet", "user", "x", metadata={"is_visually_hidden_from_conversation": True}),
        ),
        ("blank", "quiet", message("blank", "assistant", "")),
        ("a1", "blank", message("a1", "assistant", "Noted.")),
    ]
    episodes, rejects = ingest(write(tmp_path, [conversation("c", nodes, "a1")]))
    assert episodes["type"].to_list() == ["observation", "observation", "message", "observation", "message"]
    assert episodes["source_id"][0].startswith("custom-instructions:")  # see the custom-instructions test
    assert episodes["content"][0] == "Cellist.\n\nBe brief."
    assert by_node(episodes, "content")["ctx"] == "User is vegetarian."
    assert by_node(episodes, "role")["bio"] == "assistant"
    assert rejects.select("dump_record", "reason", "detail").rows() == [
        (0, "empty_node", "conversation c node root: message is null"),
        (1, "hidden_node", "conversation c node sys: a system message the user did not write"),
        (4, "hidden_node", "conversation c node ctx0: message (model_editable_context) shows no text"),
        (7, "hidden_node", "conversation c node ok: a tool message"),
        (8, "hidden_node", "conversation c node py: an assistant message to the tool 'python'"),
        (9, "hidden_node", "conversation c node think: hidden reasoning (thoughts)"),
        (
            10,
            "hidden_node",
            "conversation c node quiet: metadata.is_visually_hidden_from_conversation is true",
        ),
        (11, "hidden_node", "conversation c node blank: message (text) shows no text"),
    ]


def test_parts_mix_text_and_asset_pointers(tmp_path: Path) -> None:
    pointer = {"content_type": "image_asset_pointer", "asset_pointer": "sediment://file_1", "width": 8}
    audio = {"content_type": "audio_asset_pointer", "asset_pointer": "file-service://file-2"}
    parts = [pointer, "Look at this", "", "and this 東京"]
    nodes = [
        ("u1", None, message("u1", "user", content={"content_type": "multimodal_text", "parts": parts})),
        ("u2", "u1", message("u2", "user", content={"content_type": "multimodal_text", "parts": [audio]})),
    ]
    episodes, rejects = ingest(write(tmp_path, [conversation("c", nodes, "u2")]))
    assert episodes["content"].to_list() == ["Look at this\nand this 東京", ""]
    metas = [json.loads(m)["_source"] for m in episodes["metadata"]]
    assert metas[0]["asset_pointers"] == [pointer]
    assert metas[0]["content"] == {"content_type": "multimodal_text"}
    assert metas[1]["asset_pointers"] == [audio]
    assert rejects.height == 0


def test_times_are_float_seconds_with_conversation_fallback(tmp_path: Path) -> None:
    nodes = [
        ("a", None, message("a", "user", "float", t=1717000001.125)),
        ("b", "a", message("b", "assistant", "null", t=None)),
        ("c", "b", message("c", "user", "iso", t="2024-05-29T16:26:41.5Z")),
        ("d", "c", message("d", "user", "digits", t="1717000002")),
        ("e", "d", message("e", "user", "ms, never guessed", t=1717000001125)),
    ]
    late = conversation("late", [("x", None, message("x", "user", "null", t=None))], "x")
    late |= {"create_time": None, "update_time": 1716000009.0}
    episodes, rejects = ingest(write(tmp_path, [conversation("c", nodes, "e"), late]))
    observed = {k: v.isoformat() for k, v in by_node(episodes, "observed_at").items()}
    assert observed == {
        "a": "2024-05-29T16:26:41.125000+00:00",
        "b": "2024-05-18T02:40:00.500000+00:00",
        "c": "2024-05-29T16:26:41.500000+00:00",
        "d": "2024-05-29T16:26:42+00:00",
        "x": "2024-05-18T02:40:09+00:00",
    }
    assert by_node(episodes, "created_at")["b"] is None
    from_ = {
        k: json.loads(m)["_source"].get("observed_at_from") for k, m in by_node(episodes, "metadata").items()
    }
    assert from_ == {
        "a": None,
        "b": "conversation.create_time",
        "c": None,
        "d": None,
        "x": "conversation.update_time",
    }
    assert rejects.select("reason", "detail").rows() == [
        (
            "bad_timestamp",
            "conversation c node e: field message.create_time: 1717000001125 is out of range as epoch s",
        )
    ]


@pytest.mark.parametrize("layout", ["array", "envelope", "single", "shard"])
def test_conversation_layouts_are_detected_from_content(tmp_path: Path, layout: str) -> None:
    doc = {
        "array": [BRANCHED],
        "envelope": {"conversations": [BRANCHED]},
        "single": BRANCHED,
        "shard": [BRANCHED],
    }
    name = {"shard": "conversations-007.json", "single": "one.txt"}.get(layout, "dump.json")
    episodes, rejects = ingest(write(tmp_path, doc[layout], name))
    assert (episodes.height, rejects.height) == (6, 1)


def test_sibling_user_json_gives_the_user_and_is_itself_a_dump_of_nothing(tmp_path: Path) -> None:
    write(tmp_path, {"id": "user-42", "email": "a@example.org", "chatgpt_plus_user": True}, "user.json")
    episodes, _ = ingest(write(tmp_path, [BRANCHED]), scope_template="u:{user_id}/c:{conversation_id}")
    assert set(episodes["user_id"]) == {"user-42"}
    assert set(episodes["scope"]) == {"u:user-42/c:c1"}
    assert totals(read_all(OPENAI, tmp_path / "user.json")) == (0, 0, 0)


def test_without_a_user_a_user_scope_is_unresolved(tmp_path: Path) -> None:
    episodes, rejects = ingest(write(tmp_path, [BRANCHED]), scope_template="u:{user_id}")
    assert episodes.height == 0
    assert set(rejects["reason"].cast(pl.String)) == {"empty_node", "unresolved_scope"}


def test_assistants_page_and_bare_message_array(tmp_path: Path) -> None:
    msg = {
        "id": "msg_1",
        "object": "thread.message",
        "created_at": 1719000000,
        "thread_id": "thread_A",
        "assistant_id": "asst_9",
        "run_id": "run_1",
        "role": "assistant",
        "content": [
            {"type": "text", "text": {"value": "Hello", "annotations": []}},
            {"type": "image_url", "image_url": {"url": "https://example.org/a.png"}},
            {"type": "refusal", "refusal": "I can't share that."},
        ],
        "metadata": {"k": "v"},
    }
    page = {"object": "list", "data": [msg], "first_id": "msg_1", "last_id": "msg_1", "has_more": False}
    for doc in (page, [msg], {"data": [msg], "has_more": False}):
        episodes, rejects = ingest(write(tmp_path, doc), scope_template="a:{agent_id}/t:{session_id}")
        row = episodes.row(0, named=True)
        assert (row["idempotency_key"], row["source_id"], row["type"]) == (
            "openai-thread:thread_A:msg_1",
            "msg_1",
            "message",
        )
        assert (row["content"], row["agent_id"], row["session_id"]) == (
            "Hello\nI can't share that.",
            "asst_9",
            "thread_A",
        )
        assert row["scope"] == "a:asst_9/t:thread_A"
        assert row["observed_at"].isoformat() == "2024-06-21T20:00:00+00:00"
        meta = json.loads(row["metadata"])
        assert meta["k"] == "v"
        assert meta["_source"]["run_id"] == "run_1"
        assert meta["_source"]["content"] == [msg["content"][1], {"type": "refusal"}]
        assert rejects.height == 0


@pytest.mark.parametrize(
    ("doc", "found"),
    [
        ("just text", "a JSON string"),
        ({"data": [1], "total": 1}, "a JSON object with keys: data, total"),
        ([{"sku": 1}], "a JSON array of objects with keys: sku"),
        ([1, 2], "a JSON array of numbers"),
    ],
)
def test_foreign_documents_are_format_errors(tmp_path: Path, doc: Any, found: str) -> None:
    with pytest.raises(DumpFormatError, match=f"dump.json: not a ChatGPT export.*found {found}"):
        ingest(write(tmp_path, doc, "dump.json"))


def zipped(entries: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0))  # a name zipfile does not clean
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return buffer.getvalue()


def test_export_zip_on_a_memory_filesystem_reads_shards_in_order() -> None:
    fs = fsspec.filesystem("memory")
    second = conversation("c2", [("m", None, message("m", "user", "second"))], "m")
    fs.pipe_file(
        "/exports/chatgpt.zip",
        zipped({
            "user.json": json.dumps({"id": "user-7", "email": "x@example.org"}),
            "conversations-001.json": json.dumps([second]),
            "conversations-000.json": json.dumps({"conversations": [BRANCHED]}),
            "chat.html": "<html></html>",
            "dalle-generations/file-1.webp": b"RIFF",
        }),
    )  # fmt: skip
    try:
        episodes, rejects = ingest("/exports/chatgpt.zip", fs, scope_template="u:{user_id}")
        assert episodes["idempotency_key"].to_list()[-1] == "chatgpt:c2:m"
        assert episodes["dump_record"].to_list() == [1, 2, 3, 4, 5, 6, 7]
        assert set(episodes["scope"]) == {"u:user-7"}
        assert episodes["dump_uri"][0] == "memory:///exports/chatgpt.zip"
        assert reasons(rejects) == {0: "empty_node"}
        assert fs.ls("/exports", detail=False) == ["/exports/chatgpt.zip"]  # nothing extracted
    finally:
        fs.rm("/exports", recursive=True)


def test_hostile_zip_entries_are_rejected_and_the_rest_imports(tmp_path: Path) -> None:
    bomb = "[" + " " * (4 << 20) + "]"
    data = zipped({
        "../conversations-001.json": json.dumps([BRANCHED]),
        "/etc/conversations-002.json": json.dumps([BRANCHED]),
        "C:/conversations-003.json": json.dumps([BRANCHED]),
        "conversations-004.json": bomb,
        "../../evil.sh": "rm -rf /",
        "conversations-005.json": json.dumps([BRANCHED]),
    })  # fmt: skip
    (tmp_path / "export.zip").write_bytes(data)
    episodes, rejects = ingest(tmp_path / "export.zip")
    assert episodes.height == 6
    details = rejects.filter(pl.col("reason") == "unsafe_archive_entry")["detail"].to_list()
    assert [d.split(";")[0] for d in details[:3]] == [
        "entry name '../conversations-001.json' points outside the archive",
        "entry name '/etc/conversations-002.json' points outside the archive",
        "entry name 'C:/conversations-003.json' points outside the archive",
    ]
    assert re.fullmatch(
        r"entry 'conversations-004\.json' inflates [\d,]+ bytes to 4,194,306 \(ratio above 200\)"
        r"; entry not read",
        details[3],
    )
    assert rejects.filter(pl.col("reason") == "unsafe_archive_entry")["dump_record"].to_list() == [0, 1, 2, 3]
    assert not list(tmp_path.parent.glob("evil.sh"))


def test_zip_without_conversations_is_a_format_error(tmp_path: Path) -> None:
    (tmp_path / "photos.zip").write_bytes(zipped({"a.jpg": b"x"}))
    with pytest.raises(
        DumpFormatError, match=r"photos\.zip: not a .*without conversations\*\.json \(a\.jpg\)"
    ):
        ingest(tmp_path / "photos.zip")


def test_a_break_keeps_what_was_read_and_counts_the_break(tmp_path: Path) -> None:
    text = json.dumps([BRANCHED, BRANCHED | {"id": "c9"}])
    (tmp_path / "cut.json").write_text(text[: len(text) // 2 + 300], encoding="utf-8")
    episodes, rejects = ingest(tmp_path / "cut.json")
    assert episodes.height == 6
    assert reasons(rejects)[7] == "truncated_document"  # the truth: the file is cut short


def test_batches_of_one_keep_positions(tmp_path: Path) -> None:
    path = write(tmp_path, [BRANCHED, BRANCHED | {"id": "c9"}])
    batches = read_all(OPENAI, path, batch_rows=1)
    assert [b.read for b in batches] == [1] * 14
    records = pl.concat(
        [pl.concat([b.episodes.select("dump_record"), b.rejects.select("dump_record")]) for b in batches]
    )
    assert sorted(records["dump_record"]) == list(range(14))


def _instructions_2023(mid: str) -> Any:
    return message(
        mid,
        "system",
        "",
        t=None,
        metadata={
            "is_user_system_message": True,
            "user_context_message_data": {
                "about_user_message": "I am a cellist in Porto.",
                "about_model_message": "Answer briefly.",
            },
        },
    )


def _instructions_2024(mid: str, profile: str = "I am a cellist in Porto.") -> Any:
    return message(
        mid,
        "user",
        t=None,
        metadata={"is_visually_hidden_from_conversation": True, "is_user_system_message": True},
        content={
            "content_type": "user_editable_context",
            "user_profile": profile,
            "user_instructions": "Answer briefly.",
        },
    )


def test_custom_instructions_are_one_observation_per_distinct_text(tmp_path: Path) -> None:
    """2023 system nodes and 2024 hidden ``user_editable_context`` nodes: once per text, not per chat."""
    convs = [
        conversation(
            f"c{i}",
            [
                ("root", None, None),
                ("ci", "root", _instructions_2023("ci") if i < 2 else _instructions_2024("ci")),
                ("u", "ci", message("u", "user", "hello", t=1717000000.0 + i)),
            ],
            "u",
            create_time=1716000000.0 + i,
        )
        for i in range(4)
    ]
    convs.append(
        conversation(
            "c9",
            [("root", None, None), ("ci", "root", _instructions_2024("ci", "I moved to Lisbon."))],
            "ci",
        )
    )
    episodes, rejects = ingest(write(tmp_path, convs))
    assert "hidden_node" not in set(rejects["reason"].cast(pl.String))
    notes = episodes.filter(pl.col("type") == "observation")
    assert notes.height == 5  # one per conversation from the connector; the store keeps one per text
    assert notes["source_id"].n_unique() == 2
    assert notes["source_id"].str.starts_with("custom-instructions:").all()
    assert set(notes["content"]) == {
        "I am a cellist in Porto.\n\nAnswer briefly.",
        "I moved to Lisbon.\n\nAnswer briefly.",
    }
    assert set(notes["status"]) == {"active"}
    meta = json.loads(notes["metadata"][3])["_source"]["custom_instructions"]
    assert meta == {"user_profile": "I am a cellist in Porto.", "user_instructions": "Answer briefly."}


def test_custom_instructions_collapse_in_the_store(tmp_path: Path) -> None:
    """300 conversations carrying the same text are one episode: the newest, the rest duplicates."""
    convs = [
        conversation(
            f"c{i}",
            [("root", None, None), ("ci", "root", _instructions_2023("ci"))],
            "ci",
            create_time=1716000000.0 + i,
        )
        for i in range(300)
    ]
    landing = Location.from_url(str(tmp_path / "landing"))
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    put(landing, "openai/conversations.json", json.dumps(convs))
    result = ingest_dump(store, landing, "openai", "conversations.json", tenant_id="acme")
    assert result.counts["accepted"] == 1 and result.counts["duplicate"] == 299
    build_catalog(store, tmp_path / "catalog.duckdb")
    with connect(tmp_path / "catalog.duckdb") as con:
        rows = con.sql("SELECT session_id, type, content FROM episodes").fetchall()
    assert rows == [("c299", "observation", "I am a cellist in Porto.\n\nAnswer briefly.")]


CANVAS = conversation(
    "cv",
    [
        ("root", None, None),
        ("u", "root", message("u", "user", "Draft a packing list")),
        (
            "mk",
            "u",
            message(
                "mk",
                "assistant",
                t=1717000010.0,
                recipient="canmore.create_textdoc",
                content={
                    "content_type": "code",
                    "language": "json",
                    "text": json.dumps({"name": "Packing", "type": "document", "content": "- umbrella"}),
                },
            ),
        ),
        (
            "ok",
            "mk",
            message("ok", "tool", "Successfully created text document", name="canmore.create_textdoc"),
        ),
        (
            "up",
            "ok",
            message(
                "up",
                "assistant",
                t=1717000020.0,
                recipient="canmore.update_textdoc",
                content={
                    "content_type": "code",
                    "text": json.dumps(
                        {"updates": [{"pattern": ".*", "replacement": "- umbrella\n- socks"}]}
                    ),
                },
            ),
        ),
        (
            "part",
            "up",
            message(
                "part",
                "assistant",
                t=1717000030.0,
                recipient="canmore.update_textdoc",
                content={
                    "content_type": "code",
                    "text": json.dumps({"updates": [{"pattern": "socks", "replacement": "wool socks"}]}),
                },
            ),
        ),
        (
            "cut",
            "part",
            message(
                "cut",
                "assistant",
                recipient="canmore.update_textdoc",
                content={"content_type": "code", "text": '{"updates": [{"pattern": ".*", "repl'},
            ),
        ),
    ],
    "cut",
)


def test_canvas_documents_are_document_versions(tmp_path: Path) -> None:
    episodes, rejects = ingest(write(tmp_path, [CANVAS]))
    docs = episodes.filter(pl.col("type") == "document")
    assert by_node(docs, "content") == {
        "mk": "- umbrella",
        "up": "- umbrella\n- socks",
        "part": "wool socks",
    }
    assert set(docs["source_id"]) == {"cv:textdoc:mk"}  # one document, three versions
    assert docs["idempotency_key"].n_unique() == 3
    canvas = [json.loads(m)["_source"]["canvas"] for m in docs["metadata"]]
    assert canvas[0]["name"] == "Packing" and canvas[0]["type"] == "document"
    assert "partial" not in canvas[1]
    assert canvas[2]["partial"] is True and canvas[2]["updates"] == [{"pattern": "socks"}]
    assert reasons(rejects) == {0: "empty_node", 3: "hidden_node", 6: "invalid_json"}
