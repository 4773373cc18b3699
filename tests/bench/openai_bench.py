"""ChatGPT export benchmark: a ~200 MB ``conversations.json`` ingested with peak memory under 1 GiB.

    .venv/bin/python -m tests.bench.openai_bench              # 200 MB, best of 1 run
    BENCH_OPENAI_MB=50 BENCH_REPEAT=3 .venv/bin/python -m tests.bench.openai_bench

Generates (once, cached under ``.bench/``) a ChatGPT ``conversations.json`` of about
``BENCH_OPENAI_MB`` megabytes: conversations of 4-60 turns with a hidden system node, regenerated
answers and edited questions (off-path branches), memory writes to ``bio`` with their tool
confirmations, image parts, ``null`` message times, unicode and long assistant answers (up to
~12 KB). The ingest runs ``pipelines.store.ingest.ingest_dump`` (the code path the Dagster asset runs)
in a fresh subprocess, so its peak resident memory (VmHWM) is its own. Target (issue #3):
peak RSS < 1 GiB.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Any

from tests.bench._harness import BENCH_DIR, ingest, measure, peak_memory_main, report
from tests.bench._harness import WORDS as BASE_WORDS

#: The benchmark words, less one, and what ChatGPT answers are full of (this list shapes the
#: cached dump: changing it changes what a cached file would have held).
WORDS = [w for w in BASE_WORDS if w != "emoji"] + [
    "【4†source】",
    "consumer",
    "partition",
    "rebalance",
    "itinerary",
]


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi)))


def _message(
    rng: random.Random, nid: str, role: str, text: str, t: float | None, **kw: Any
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "id": nid,
        "author": {"role": role, "name": kw.pop("name", None), "metadata": {}},
        "create_time": t,
        "update_time": None,
        "content": {"content_type": "text", "parts": [text]},
        "status": "finished_successfully",
        "end_turn": True if role == "assistant" else None,
        "weight": 1.0,
        "metadata": {"model_slug": "gpt-4o", "request_id": f"req-{rng.getrandbits(48):012x}"}
        if role == "assistant"
        else {},
        "recipient": "all",
        "channel": None,
    }
    msg.update(kw)
    return msg


def conversation(rng: random.Random, i: int) -> dict[str, Any]:
    """One realistic conversation tree (PEER_FORMATS.md §4.1)."""
    cid = f"{i:08x}-{rng.getrandbits(16):04x}-4000-8000-{rng.getrandbits(48):012x}"
    t0 = 1_690_000_000.0 + i * 97.123
    mapping: dict[str, dict[str, Any]] = {}

    def add(nid: str, parent: str | None, message: dict[str, Any] | None) -> None:
        mapping[nid] = {"id": nid, "message": message, "parent": parent, "children": []}
        if parent is not None:
            mapping[parent]["children"].append(nid)

    add("root", None, None)
    hidden = _message(rng, "sys", "system", "", None, metadata={"is_visually_hidden_from_conversation": True})
    add("sys", "root", hidden)
    parent, t = "sys", t0
    for turn in range(rng.randint(2, 30)):
        t += rng.uniform(5, 300)
        user = f"u{turn}"
        when = None if rng.random() < 0.01 else t
        add(user, parent, _message(rng, user, "user", _text(rng, 5, 80), when))
        if rng.random() < 0.05:  # an edited question: the old one stays on a branch
            add(f"{user}-old", parent, _message(rng, f"{user}-old", "user", _text(rng, 5, 40), t - 2))
        if rng.random() < 0.08:  # a memory write and its confirmation
            bio = f"bio{turn}"
            add(
                bio,
                user,
                _message(rng, bio, "assistant", "User " + _text(rng, 4, 15), t + 1, recipient="bio"),
            )
            add(f"{bio}-ok", bio, _message(rng, f"{bio}-ok", "tool", "Model set context updated.", t + 1.4))
            user = f"{bio}-ok"
        if rng.random() < 0.1:  # a regenerated answer, superseded
            add(f"a{turn}-old", user, _message(rng, f"a{turn}-old", "assistant", _text(rng, 20, 400), t + 2))
        answer = _text(rng, 20, 600 if rng.random() < 0.9 else 1800)
        add(f"a{turn}", user, _message(rng, f"a{turn}", "assistant", answer, t + 3))
        parent = f"a{turn}"
    return {
        "title": _text(rng, 2, 6),
        "create_time": t0,
        "update_time": t + 5,
        "mapping": mapping,
        "moderation_results": [],
        "current_node": parent,
        "plugin_ids": None,
        "conversation_id": cid,
        "conversation_template_id": None,
        "gizmo_id": None,
        "is_archived": False,
        "safe_urls": [],
        "default_model_slug": "gpt-4o",
        "id": cid,
    }


def generate(megabytes: int, path: Path) -> None:
    rng = random.Random(20240529)
    target = megabytes * 1_000_000
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write("[")
        written, i = 1, 0
        while written < target:
            text = ("," if i else "") + json.dumps(conversation(rng, i), ensure_ascii=False)
            written += len(text.encode("utf-8"))
            f.write(text)
            i += 1
        f.write("]")
    tmp.replace(path)


def dump_for(megabytes: int) -> Path:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"chatgpt_conversations_{megabytes}mb.json"
    if not path.exists():
        print(f"generating {path} (~{megabytes} MB) …", flush=True)
        generate(megabytes, path)
    return path


def _ingest(dump: str, out: str) -> dict[str, int]:
    return ingest("openai", dump, out, name="conversations.json")


def _child(dump: str, out: str) -> None:
    import pipelines.store.ingest  # noqa: F401  (imported before the clock starts)

    report(_ingest, dump, out)


def run_once(dump: Path) -> dict[str, float]:
    """One ingest in a fresh process, so its peak resident memory is the ingest's alone."""
    return measure("tests.bench.openai_bench", str(dump), workdir=BENCH_DIR)


def main() -> int:
    return peak_memory_main(dump_for(int(os.environ.get("BENCH_OPENAI_MB", "200"))), run_once)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(*sys.argv[2:])
    else:
        sys.exit(main())
