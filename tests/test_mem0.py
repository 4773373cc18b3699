"""Mem0 edge cases, written inline: every bad record ends as a reject with the right reason."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from connectors import registry
from tests.test_connectors_conformance import read_all, totals

MEM0 = registry.get("mem0")


def memory(i: int, **fields: object) -> dict[str, object]:
    return {
        "id": f"m-{i}",
        "memory": f"fact {i}",
        "user_id": "u1",
        "created_at": "2025-01-01T00:00:00Z",
    } | fields


def reasons(path: Path, **kw: object) -> dict[int, str]:
    batches = read_all(MEM0, path, **kw)
    rejects = pl.concat([b.rejects for b in batches])
    read, accepted, rejected = totals(batches)
    assert read == accepted + rejected
    return dict(zip(rejects["dump_record"], rejects["reason"].cast(pl.String), strict=True))


@pytest.mark.parametrize("layout", ["array", "results", "paginated", "jsonl"])
def test_bad_records_in_every_envelope(tmp_path: Path, layout: str) -> None:
    records = [
        memory(0),
        memory(1, memory="x" * (100 * 1024 + 1)),  # over 100 KB
        memory(2, created_at=1717000000),  # epoch seconds: never guessed
        memory(3, created_at="31/12/2025"),  # not ISO 8601
        memory(4, memory={"text": "structured"}),  # wrong type
        memory(5, user_id=None, agent_id="travel-agent"),  # scope needs {user_id}
        {"memory": "no id", "user_id": "u1", "created_at": "2025-01-01T00:00:00Z"},
        memory(7, categories="food"),  # categories not a list
        memory(8, role="narrator"),  # not a message role
        memory(9, id=12345),  # numeric ids are ids
        memory(10, name="old field name", memory=None),
    ]
    dump = tmp_path / f"dump.{'jsonl' if layout == 'jsonl' else 'json'}"
    if layout == "jsonl":
        dump.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    else:
        body: object = {
            "array": records,
            "results": {"results": records},
            "paginated": {"count": 11, "next": None, "previous": None, "results": records},
        }[layout]
        dump.write_text(json.dumps(body), encoding="utf-8")
    assert reasons(dump) == {
        1: "payload_too_large",
        2: "bad_timestamp",
        3: "bad_timestamp",
        4: "wrong_type",
        5: "unresolved_scope",
        6: "missing_field",
        7: "wrong_type",
        8: "bad_value",
    }


def test_reject_keeps_the_record_and_says_where(tmp_path: Path) -> None:
    dump = tmp_path / "d.json"
    dump.write_text(
        json.dumps([memory(0), memory(1, created_at="yesterday", extra={"k": 1})]), encoding="utf-8"
    )
    (batch,) = read_all(MEM0, dump)
    (reject,) = batch.rejects.to_dicts()
    assert reject["dump_record"] == 1
    assert reject["detail"] == "field created_at: yesterday is not an ISO 8601 timestamp"
    assert json.loads(reject["raw"])["extra"] == {"k": 1}
    assert reject["dump_uri"].endswith("/d.json")


def test_byte_order_mark_and_invalid_utf8(tmp_path: Path) -> None:
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps([memory(0), memory(1)]).encode())
    assert totals(read_all(MEM0, bom)) == (2, 2, 0)

    broken = tmp_path / "broken.json"
    good = json.dumps(memory(0)).encode()
    after = json.dumps(memory(1)).encode()
    broken.write_bytes(b"[" + good + b"," + good.replace(b"fact", b"f\xffct") + b"," + after + b"]")
    batches = read_all(MEM0, broken)
    assert totals(batches) == (3, 2, 1)  # the bad byte costs its record only
    assert pl.concat([b.rejects for b in batches])["reason"].to_list() == ["invalid_utf8"]


def test_unknown_fields_are_kept_exactly(tmp_path: Path) -> None:
    dump = tmp_path / "d.json"
    dump.write_text(
        json.dumps(
            [
                memory(0, brand_new={"a": [1, 2.5]}, metadata={"m": 1.0}),
                memory(1, metadata={"_source": "mine"}),
                memory(2, metadata=["not", "an", "object"]),
            ]
        ),
        encoding="utf-8",
    )
    (batch,) = read_all(MEM0, dump)
    meta = [json.loads(m) for m in batch.episodes["metadata"]]
    assert meta[0] == {"m": 1.0, "_source": {"brand_new": {"a": [1, 2.5]}}}
    assert meta[1] == {"_source": {"metadata": {"_source": "mine"}}}
    assert meta[2] == {"_source": {"metadata": ["not", "an", "object"]}}


def test_scope_template_alternatives(tmp_path: Path) -> None:
    dump = tmp_path / "d.json"
    dump.write_text(json.dumps([memory(0, agent_id="a1", app_id="kitchen", run_id="r9")]), encoding="utf-8")
    (batch,) = read_all(MEM0, dump, scope_template="org:acme/app:{app_id}/agent:{agent_id}/run:{run_id}")
    assert batch.episodes["scope"].to_list() == ["org:acme/app:kitchen/agent:a1/run:r9"]
    assert batch.episodes["session_id"].to_list() == ["r9"]


def test_large_array_uses_bounded_batches(tmp_path: Path) -> None:
    dump = tmp_path / "big.json"
    dump.write_text(json.dumps([memory(i) for i in range(5_000)]), encoding="utf-8")
    batches = read_all(MEM0, dump, batch_rows=1_000)
    assert max(b.read for b in batches) <= 1_000
    assert totals(batches) == (5_000, 5_000, 0)
    positions = pl.concat([b.episodes for b in batches])["dump_record"]
    assert positions.to_list() == list(range(5_000))


def test_fast_path_judges_types_it_cannot_see(tmp_path: Path) -> None:
    """The typed scan reads an object-valued memory as text; such records are re-read with their
    source text rather than accepted, and text that merely looks like a number stays text."""
    dump = tmp_path / "d.json"
    records = [memory(i) for i in range(20)]
    records[5] = memory(5, memory={"text": "structured"})
    records[6] = memory(6, memory="42")
    records[7] = memory(7, memory="[citation needed]")
    dump.write_text(json.dumps(records), encoding="utf-8")
    batches = read_all(MEM0, dump, batch_rows=4)
    episodes = pl.concat([b.episodes for b in batches])
    assert reasons(dump, batch_rows=4) == {5: "wrong_type"}
    assert episodes.filter(pl.col("dump_record").is_in([6, 7]))["content"].to_list() == [
        "42",
        "[citation needed]",
    ]
    assert episodes["dump_record"].to_list() == [i for i in range(20) if i != 5]
