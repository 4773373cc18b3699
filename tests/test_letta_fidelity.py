"""Letta noise that must not become messages (send_message receipts linked by ``tool_call_id``,
recompiled system prompts, ``system_alert`` turns) and agent files broken as published (a cut
document, then a complete one appended)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl

from tests.test_letta import agent_file, frames, message, reasons, send, text_part, write

RECEIPT = json.dumps({"status": "OK", "message": "None", "time": "2025-10-10 07:14:05 AM UTC+0000"})
#: Letta's compiled system prompt, both layouts (MemGPT's ``### Memory`` and the later XML tags).
COMPILED_LEGACY = (
    "You plan.\n\n### Memory [last modified: 2025-10-10 07:14:00 AM UTC+0000]\n"
    "3 previous messages between you and the user are stored in recall memory\n\n"
    "Core memory shown below (limited in size, additional information stored in archival / recall memory):\n"
    '<human characters="10/5000">\nName: Ada.\n</human>'
)
COMPILED_XML = (
    "<base_instructions>\nYou plan.\n</base_instructions>\n\n<memory_blocks>\n"
    "The following memory blocks are currently engaged in your core memory unit:\n\n"
    "<human>\nName: Ada.\n</human>\n</memory_blocks>\n\n<memory_metadata>\n- The current system date is: "
    "October 10, 2025\n</memory_metadata>"
)


def test_send_message_receipts_are_found_through_their_call(tmp_path: Path) -> None:
    calls = send("Booked.")
    calls[0]["id"] = "call-9"
    messages = [
        message(1, "assistant", [], tool_calls=calls),
        # real files: name null (v2) or the agent's name; only tool_call_id links the receipt
        message(2, "tool", [text_part(RECEIPT)], name=None, tool_call_id="call-9"),
        message(3, "tool", [text_part(RECEIPT)], name="planner", tool_call_id="call-9"),
        message(4, "tool", [], tool_returns=[{"tool_call_id": "call-9", "func_response": RECEIPT}]),
        message(5, "tool", [text_part("3 results")], name=None, tool_call_id="call-other"),
    ]
    episodes, rejects = frames(write(tmp_path, "receipts.af", agent_file(messages)))
    assert episodes.filter(pl.col("type") == "message").select("role", "content").rows() == [
        ("assistant", "Booked."),
        ("tool", "3 results"),
    ]
    assert reasons(rejects) == {2: "hidden_node", 3: "hidden_node", 4: "hidden_node"}
    assert all("receipt send_message returns" in d for d in rejects["detail"])


def test_every_compiled_system_prompt_is_skipped(tmp_path: Path) -> None:
    messages = [
        message(0, "system", [text_part(COMPILED_LEGACY)]),
        message(1, "user", [text_part("hello")]),
        message(2, "system", [text_part(COMPILED_LEGACY.replace("3 previous", "9 previous"))]),
        message(3, "system", [text_part(COMPILED_XML)]),
        message(4, "system", [text_part("You plan.\n\n(recompiled, memory rendered below)")]),
        message(5, "system", [text_part("A plain system note from the operator.")]),
    ]
    episodes, rejects = frames(write(tmp_path, "recompiled.af", agent_file(messages)))
    assert episodes.filter(pl.col("type") == "message")["content"].to_list() == [
        "hello",
        "A plain system note from the operator.",
    ]
    assert reasons(rejects) == {1: "hidden_node", 3: "hidden_node", 4: "hidden_node", 5: "hidden_node"}
    assert len(set(rejects["detail"].str.replace(r"^.*?\): ", ""))) == 1  # one reason, one wording


def test_system_alert_turns_are_letta_talking(tmp_path: Path) -> None:
    alert = json.dumps({"type": "system_alert", "message": "Note: prior messages were hidden. Summary: hi."})
    messages = [message(1, "user", [text_part(alert)]), message(2, "user", [text_part("real words")])]
    episodes, rejects = frames(write(tmp_path, "alert.af", agent_file(messages)))
    assert episodes.filter(pl.col("type") == "message")["content"].to_list() == ["real words"]
    assert reasons(rejects) == {1: "hidden_node"}
    assert (
        rejects["detail"]
        .item()
        .endswith("a system_alert event Letta sends as a user turn, not said by the user")
    )


def _legacy(name: str, turns: list[str]) -> dict[str, Any]:
    """A legacy agent file in the key order Letta writes (``name``, ``tags`` after ``messages``)."""
    return {
        "agent_type": "memgpt_agent",
        "core_memory": [{"label": "human", "value": f"{name} plays the cello.", "limit": 5000}],
        "created_at": "2025-04-01T03:47:19",
        "in_context_message_indices": list(range(len(turns))),
        "messages": [
            {
                "role": "user",
                "content": [text_part(t)],
                "created_at": f"2025-04-01T03:48:{i:02d}",
                "tool_calls": [],
            }
            for i, t in enumerate(turns)
        ],
        "name": name,
        "system": "You are a companion.",
        "tags": [{"tag": "user:chad"}],
        "tools": [],
        "updated_at": "2025-04-01T03:50:00",
        "version": "0.6.47",
    }


def test_a_cut_document_then_a_complete_one_reads_both(tmp_path: Path) -> None:
    first = json.dumps(_legacy("chad-companion", ["one", "two", "three"]), indent=2)
    second = json.dumps(_legacy("chad-companion", ["one", "two", "three", "four"]), indent=2)
    cut = first.index("three") + 2
    path = tmp_path / "published.af"
    path.write_text(first[:cut] + "\n" + second + "\n", encoding="utf-8")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    episodes, rejects = frames(path)
    # the complete document is all there: agent, four turns, its block
    complete = episodes.filter(pl.col("source_id").str.starts_with(f"{sha}/1:"))
    assert complete["content"].to_list() == [
        "You are a companion.",
        "one",
        "two",
        "three",
        "four",
        "chad-companion plays the cello.",
    ]
    assert complete["scope"].unique().to_list() == ["agent:chad-companion"]
    # the cut one: what it finished before the cut, and its loss reported as a truncation
    cut_rows = episodes.filter(~pl.col("source_id").str.starts_with(f"{sha}/1:"))
    assert cut_rows["content"].to_list() == []  # its agent's name was cut off: nothing says whose
    assert rejects.select("reason").to_series().cast(pl.String).value_counts(sort=True).rows() == [
        ("truncated_document", 4)
    ]
    assert rejects["detail"][-1].startswith("document 1 of 2 is cut off at byte")
    assert "a complete document follows at byte" in rejects["detail"][-1]
    assert episodes["idempotency_key"].n_unique() == episodes.height


def test_a_file_that_just_ends_is_a_truncation(tmp_path: Path) -> None:
    messages = [message(i, "user", [text_part(f"turn {i}")]) for i in range(1, 5)]
    text = json.dumps(agent_file(messages), indent=2)
    path = tmp_path / "cut.af"
    path.write_text(text[: text.index("turn 3") + 3], encoding="utf-8")
    episodes, rejects = frames(path)
    assert episodes["content"].to_list() == ["turn 1", "turn 2"]
    assert reasons(rejects) == {2: "truncated_document"}


def test_looking_for_appended_documents_is_bounded(tmp_path: Path) -> None:
    """A broken file with many places where a document could start (each parsing on to the end
    of the file before it fails) costs a few parses of the file, not one per place."""
    from tests.hostile import ingest_bounded

    opener = b'\n{"agents": [{"a": "' + b"x" * 100_000 + b'"},'  # valid to the end, never closed
    data = b'{"agents": [' + opener * 100  # 10 MB: 500 MB of parsing if every place were tried
    out = ingest_bounded(tmp_path, {"letta/broken.af": data}, timeout=60.0)
    assert not out.killed, out.stderr
    counts = out.counts("letta/broken.af")
    assert counts["accepted"] == 0 and counts["read"] == counts["rejected"] > 0
    assert out.wall < 10, out.wall
