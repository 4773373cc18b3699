"""The record splitter every streamed JSON path uses (``connectors.kit.jsonscan``): items cut out
exactly, whatever the block boundaries, and every fault accounted for."""

from __future__ import annotations

import io
import json
import random

import pytest

from connectors.kit import jsonscan
from connectors.kit.jsonscan import Splitter, depth_exceeds

DOC = {
    "results": [
        {"id": "a", "text": 'brackets in strings: ]}[{ and "quotes" \\ and \\"', "n": [1, 2.5, None]},
        {"id": "b", "nested": {"x": [[{"y": True}]]}, "unicode": "é 🇵🇹"},
        "a string item",
        -12.5e3,
        None,
    ],
    "next": "[not, items]",
}


def _items(data: bytes, prefix: str, **kw: int) -> tuple[list[object], Splitter]:
    splitter = Splitter(io.BytesIO(data), prefix, **kw)
    return [json.loads(i.data) if i.data is not None else i.reason for i in splitter], splitter


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 1 << 20])
def test_items_are_exact_whatever_the_block_size(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonscan, "_BLOCK", block)
    for indent in (None, 2):
        data = b"\xef\xbb\xbf" + json.dumps({"meta": {"results": [9]}, **DOC}, indent=indent).encode()
        items, splitter = _items(data, "results.item")
        assert items == DOC["results"]
        assert splitter.unread is None
        assert _items(json.dumps(DOC["results"]).encode(), "item")[0] == DOC["results"]
        assert _items(json.dumps(DOC).encode(), "")[0] == [DOC]


def test_random_documents_split_like_json_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    alphabet = ['"', "\\", "[", "]", "{", "}", ",", ":", "a", "é", " ", "\n"]

    def value(depth: int) -> object:
        kind = rng.randrange(6 if depth < 4 else 3)
        if kind == 0:
            return "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))
        if kind == 1:
            return rng.choice([0, -1.5, True, False, None, 10**20])
        if kind == 2:
            return rng.random()
        if kind == 3:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {f"k{i}{rng.choice(alphabet)}": value(depth + 1) for i in range(rng.randrange(4))}

    for _ in range(200):
        monkeypatch.setattr(jsonscan, "_BLOCK", rng.randrange(1, 40))
        doc = [value(0) for _ in range(rng.randrange(5))]
        assert _items(json.dumps(doc, indent=rng.choice([None, 1])).encode(), "item")[0] == doc


def test_faults_cost_one_item_or_show_what_was_not_read() -> None:
    big = b'{"t": "' + b"x" * 300 + b'"}'
    deep = b"[" * 70 + b"]" * 70
    splitter = Splitter(io.BytesIO(b"[" + big + b", " + deep + b', {"a": "\xff"}, 1]'), "item", max_bytes=200)
    found = [(i.reason, i.data) for i in splitter]
    assert found == [("payload_too_large", None), ("too_deep", None), (None, b'{"a": "\xff"}'), (None, b"1")]
    assert splitter.unread is None
    data = b'[{"a": 1}, {"a": 2}}, {"a": 3}]'
    items, splitter = _items(data, "item")
    assert items == [{"a": 1}, {"a": 2}]
    assert splitter.unread is not None
    assert (splitter.unread.offset, splitter.unread.size) == (data.index(b"}}") + 1, 12)
    assert splitter.unread.reason == "malformed_document"
    items, splitter = _items(b'[{"a": 1}, {"a": "cut', "item")
    assert items == [{"a": 1}]
    assert splitter.unread is not None and splitter.unread.reason == "truncated_document"
    items, splitter = _items(b'[{"a": 1}]\n[{"a": 2}]', "item")
    assert splitter.unread is not None and splitter.unread.reason == "trailing_data"
    assert splitter.unread.size == len(b'[{"a": 2}]')


def test_depth_exceeds_ignores_brackets_in_strings() -> None:
    assert not depth_exceeds(b'{"a": "' + b"[" * 200 + b'"}', 64)
    assert depth_exceeds(b"[" * 65 + b"]" * 65, 64)
    assert not depth_exceeds(b"[" * 64 + b"]" * 64, 64)
