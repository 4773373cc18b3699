"""CortexDB specifics, written inline: export lines and import envelopes fail the same way."""

from __future__ import annotations

import json
from typing import Any

from connectors import registry
from tests.connector_helpers import read_memory, reject_rows

CORTEXDB = registry.get("cortexdb")


def envelope(key: str, content: dict[str, Any]) -> dict[str, Any]:
    return {
        "modality": "conversation",
        "content": content,
        "context": {"observed_at": "2025-05-03T09:00:00Z"},
        "idempotency_key": key,
        "scope": "org:acme",
    }


def export(episode_id: str, content: Any) -> dict[str, Any]:
    return {
        "episode_id": episode_id,
        "scope": "org:acme",
        "type": "decision",
        "content": content,
        "timestamp": "2025-05-02T16:20:00Z",
    }


def test_text_that_is_not_a_string_is_wrong_type_in_both_line_kinds() -> None:
    lines = [
        envelope("k-ok", {"kind": "message", "role": "user", "text": "Which DB did we pick?"}),
        envelope("k-obj", {"kind": "message", "role": "user", "text": {"body": "hi"}}),
        envelope("k-num", {"kind": "message", "role": "user", "text": 42}),
        envelope("k-blob", {"kind": "blob_ref", "blob_id": "b-1", "transcript": ["a", "b"]}),
        export("ep_obj", {"body": "hi"}),
        export("ep_num", 42),
    ]
    dump = "".join(json.dumps(line) + "\n" for line in lines)
    episodes, rejects = read_memory(CORTEXDB, dump, "mixed.jsonl")
    assert episodes["content"].to_list() == ["Which DB did we pick?"]
    assert reject_rows(rejects) == [
        (1, "wrong_type", "field content.text is a JSON object, expected a string"),
        (2, "wrong_type", "field content.text is a JSON number, expected a string"),
        (3, "wrong_type", "field content.transcript is a JSON array, expected a string"),
        (4, "wrong_type", "field content is a JSON object, expected a string"),
        (5, "wrong_type", "field content is a JSON number, expected a string"),
    ]
