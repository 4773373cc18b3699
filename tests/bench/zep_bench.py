"""Zep/Graphiti benchmark: a large Graphiti edge dump (JSON Lines) ingested in bounded memory.

    .venv/bin/python -m tests.bench.zep_bench               # ~200 MB, best of 1 run
    BENCH_ZEP_MB=50 BENCH_REPEAT=3 .venv/bin/python -m tests.bench.zep_bench

Generates (once, cached under ``.bench/``) about ``BENCH_ZEP_MB`` megabytes of Graphiti entity
edges as a graph export script writes them: one edge per line with its four bi-temporal times
(RFC 3339 with nanoseconds, as Go writes them; null bounds), ~15% expired (superseded history),
unicode facts, attributes, episode references and half of them with a 256-dim ``fact_embedding``
(dropped on import). The ingest runs ``pipelines.store.ingest.ingest_dump`` (the asset's code path) in
a fresh subprocess, so its peak resident memory is its own. Target: peak RSS < 1 GiB.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from tests.bench._harness import BENCH_DIR, ingest, measure, peak_memory_main, report
from tests.bench.openai_bench import WORDS


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"


def _time(rng: random.Random, base: int) -> str:
    t = time.gmtime(base + rng.randint(0, 86_400 * 30))
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{rng.randint(0, 999_999_999):09d}Z"


def edge(rng: random.Random, i: int) -> dict[str, Any]:
    base = 1_700_000_000 + i * 60
    expired = rng.random() < 0.15
    return {
        "uuid": _uuid(rng),
        "group_id": f"user-{i % 5_000:05d}",
        "source_node_uuid": _uuid(rng),
        "target_node_uuid": _uuid(rng),
        "created_at": _time(rng, base),
        "name": rng.choice(["LIVES_IN", "WORKS_AT", "PREFERS", "IS_ALLERGIC_TO", "MANAGES", "USES"]),
        "fact": " ".join(rng.choices(WORDS, k=rng.randint(6, 60))),
        "fact_embedding": [round(rng.uniform(-1, 1), 6) for _ in range(256)] if rng.random() < 0.5 else None,
        "episodes": [_uuid(rng) for _ in range(rng.randint(1, 3))],
        "expired_at": _time(rng, base + 86_400 * 31) if expired else None,
        "valid_at": _time(rng, base - 86_400 * 60) if rng.random() < 0.8 else None,
        "invalid_at": _time(rng, base + 86_400 * 30) if expired else None,
        "reference_time": _time(rng, base),
        "attributes": {"confidence": rng.choice(["low", "medium", "high"]), "turn": rng.randint(1, 40)},
    }


def dump_for(megabytes: int) -> Path:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"graphiti_edges_{megabytes}mb.jsonl"
    if path.exists():
        return path
    print(f"generating {path} (~{megabytes} MB) …", flush=True)
    rng = random.Random(20250302)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        written, i = 0, 0
        while written < megabytes * 1_000_000:
            line = json.dumps(edge(rng, i), ensure_ascii=False) + "\n"
            written += len(line.encode("utf-8"))
            f.write(line)
            i += 1
    tmp.replace(path)
    return path


def _ingest(dump: str, out: str) -> dict[str, int]:
    return ingest("zep", dump, out, name="edges.jsonl", scope_template="graph:{group_id}")


def _child(dump: str, out: str) -> None:
    import pipelines.store.ingest  # noqa: F401  (imported before the clock starts)

    report(_ingest, dump, out)


def run_once(dump: Path) -> dict[str, float]:
    """One ingest in a fresh process, so its peak resident memory is the ingest's alone."""
    return measure("tests.bench.zep_bench", str(dump), workdir=BENCH_DIR)


def main() -> int:
    return peak_memory_main(dump_for(int(os.environ.get("BENCH_ZEP_MB", "200"))), run_once)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(*sys.argv[2:])
    else:
        sys.exit(main())
