"""What the benchmarks share: the cache folder, the words generated text is made of, and measuring
one step in a fresh process, so that its peak resident memory (``VmHWM``, not ``ru_maxrss``, which
Linux carries over from the parent) is that step's alone.

A benchmark module runs itself as the child: ``python -m <module> --child <args…> <out>``; the
child calls :func:`report` with the step's function, which prints one JSON line (the step's
counts, wall time and peak RSS) that :func:`measure` reads back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.hostile import own_peak_bytes

BENCH_DIR = Path(os.environ.get("MEMPORT_BENCH_DIR", ".bench"))
GIB = 1 << 30
WORDS = [
    "the",
    "user",
    "prefers",
    "tea",
    "coffee",
    "morning",
    "meeting",
    "project",
    "deadline",
    "café",
    "naïve",
    "résumé",
    "data",
    "pipeline",
    "memory",
    "agent",
    "Lisbon",
    "São",
    "Paulo",
    "München",
    "東京",
    "日本語",
    "学習",
    "emoji",
    "🚀",
    "🌶️",
    "payments",
    "PostgreSQL",
    "Kafka",
    "weekly",
    "summary",
    "Friday",
    "allergic",
    "peanuts",
    "marathon",
    "Berlin",
    "daughter",
    "kindergarten",
    "standing",
    "desk",
    "cello",
    "orchestra",
    "metric",
    "units",
    "timezone",
    "Europe",
    "vegetarian",
]


def measure(module: str, *args: str, workdir: Path) -> dict[str, float]:
    """Run module's child with args and a fresh scratch folder under workdir."""
    out = tempfile.mkdtemp(prefix="memport-bench-", dir=workdir)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", module, "--child", *args, out],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def report(step: Callable[..., int | dict[str, Any]], *args: str) -> None:
    """In the child: run step; print its counts (or rows), wall time and peak RSS."""
    started = time.perf_counter()
    result = step(*args)
    wall = time.perf_counter() - started
    peak = own_peak_bytes()
    counts = result if isinstance(result, dict) else {"rows": result}
    print(json.dumps({**counts, "wall": wall, "peak": peak}))


def best_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """The fastest run's figures, with the highest peak of all runs."""
    return min(runs, key=lambda r: r["wall"]) | {"peak": max(r["peak"] for r in runs)}


def land(dump: Path, dest: Path) -> None:
    """Put ``dump`` at ``dest`` in a landing zone: a hard link, or a copy across file systems.

    Not a symbolic link: memport refuses links that lead out of the landing zone."""
    try:
        os.link(dump.resolve(), dest)
    except OSError:
        shutil.copyfile(dump, dest)


def ingest(system: str, dump: str, out: str, *, name: str, **options: Any) -> dict[str, int]:
    """Ingest ``dump`` (hard-linked as ``name`` into a landing zone under ``out``) into a fresh
    store there, through ``pipelines.store.ingest.ingest_dump`` (the code path the Dagster asset
    runs); its counts. The cache and ``out`` share the bench folder, so :func:`land` links (were
    it to copy, the copy would be timed with the step)."""
    from pipelines.store.episodes import EpisodeStore
    from pipelines.store.ingest import ingest_dump
    from pipelines.store.locations import Location

    landing_dir = Path(out) / "landing" / system
    landing_dir.mkdir(parents=True)
    land(Path(dump), landing_dir / name)
    result = ingest_dump(
        EpisodeStore.from_url(f"{out}/store"),
        Location.from_url(f"{out}/landing"),
        system,
        name,
        tenant_id="bench",
        **options,
    )
    return dict(result.counts)


def peak_memory_main(dump: Path, run_once: Callable[[Path], dict[str, float]]) -> int:
    """A one-dump ingest benchmark: best of ``BENCH_REPEAT`` runs; PASS if peak RSS < 1 GiB."""
    print(f"dump: {dump} ({dump.stat().st_size / 1e6:,.0f} MB); machine: {os.cpu_count()} cores")
    best = best_of([run_once(dump) for _ in range(int(os.environ.get("BENCH_REPEAT", "1")))])
    counts = ", ".join(f"{k} {best[k]:,.0f}" for k in ("accepted", "rejected", "duplicate"))
    print(f"records read {best['read']:,.0f} ({counts})")
    rate = best["read"] / best["wall"]
    print(f"wall {best['wall']:.2f} s; {rate:,.0f} records/s; peak RSS {best['peak'] / 1e6:,.0f} MB")
    ok = best["peak"] < GIB
    print(("PASS" if ok else "FAIL") + f" peak memory: {best['peak'] / GIB:.2f} GiB (target < 1 GiB)")
    return 0 if ok else 1
