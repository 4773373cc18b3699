"""Backup benchmark: first snapshot, no-change snapshot (trusted, and verifying every object it
reuses, as after a failed restore check) and full restore of a 1,000,000-episode store.

    python -m tests.bench.backup_bench        (or `make bench-backup`; BENCH_N=... to change N)

The store is built by ingesting the ingest benchmark's Mem0 dump (generated once and cached in
``$MEMPORT_BENCH_DIR``, default ``.bench/``); the store, backup and restored copy go to a scratch
directory under the system's temp dir that is removed afterwards. Local disk for all three.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipelines.backups.restore import prove, restore
from pipelines.backups.snapshot import take_snapshot
from pipelines.store.episodes import EpisodeStore
from pipelines.store.ingest import ingest_dump
from pipelines.store.locations import Location
from tests.bench._harness import land
from tests.bench.ingest_bench import dump_for


def main() -> int:
    n = int(os.environ.get("BENCH_N", "1000000"))
    dump = dump_for(n)
    work = Path(tempfile.mkdtemp(prefix="memport-backup-bench-"))
    try:
        (work / "landing" / "mem0").mkdir(parents=True)
        land(dump, work / "landing" / "mem0" / "dump.json")  # before the clock: it may copy
        store = EpisodeStore.from_url(str(work / "store"))
        backup = Location.from_url(str(work / "backups"))
        clock = time.perf_counter()
        result = ingest_dump(
            store, Location.from_url(str(work / "landing")), "mem0", "dump.json", tenant_id="b"
        )
        ingest_s = time.perf_counter() - clock

        now = datetime.now(UTC)
        day = now.date().isoformat()
        clock = time.perf_counter()
        first = take_snapshot(store, backup, day, now=now)
        first_s = time.perf_counter() - clock
        later = now + timedelta(days=1)
        clock = time.perf_counter()
        again = take_snapshot(store, backup, later.date().isoformat(), now=later)
        again_s = time.perf_counter() - clock
        checked = later + timedelta(days=1)
        clock = time.perf_counter()
        verified = take_snapshot(store, backup, checked.date().isoformat(), now=checked, verify=True)
        verified_s = time.perf_counter() - clock
        clock = time.perf_counter()
        restored = restore(backup, day, EpisodeStore.from_url(str(work / "restored")), work / "r.duckdb")
        restore_s = time.perf_counter() - clock
        clock = time.perf_counter()
        verdict = prove(backup, day, store, scratch=work)
        prove_s = time.perf_counter() - clock
        clock = time.perf_counter()  # onto the live store itself: every file already identical
        in_place = restore(backup, day, store, work / "live.duckdb", overwrite=True)
        in_place_s = time.perf_counter() - clock
    finally:
        shutil.rmtree(work, ignore_errors=True)

    figures = {
        "episodes": result.counts["accepted"],
        "store_files": first.files,
        "store_bytes": first.bytes,
        "ingest_s": round(ingest_s, 2),
        "first_snapshot_s": round(first_s, 2),
        "first_snapshot_bytes_copied": first.copied_bytes,
        "nochange_snapshot_s": round(again_s, 3),
        "nochange_snapshot_bytes_copied": again.copied_bytes,
        "verifying_snapshot_s": round(verified_s, 3),
        "verifying_snapshot_bytes_read": verified.verified_bytes,
        "full_restore_s": round(restore_s, 2),
        "restored_episodes": restored.episodes,
        "restore_check_s": round(prove_s, 2),
        "restore_check_passed": verdict["passed"],
        "restore_onto_live_s": round(in_place_s, 2),
        "restore_onto_live_files_written": in_place.written,
    }
    print(f"store: {figures['episodes']:,} episodes in {first.files} files, {first.bytes / 1e6:.1f} MB")
    print(f"first snapshot     : {first_s:6.2f} s, {first.copied_bytes / 1e6:.1f} MB copied")
    print(f"no-change snapshot : {again_s:6.3f} s, {again.copied_bytes} bytes copied")
    print(f"verifying snapshot : {verified_s:6.3f} s, {verified.verified_bytes / 1e6:.1f} MB hashed")
    print(f"full restore       : {restore_s:6.2f} s (verify every sha256, copy, rebuild catalog)")
    print(f"restore check      : {prove_s:6.2f} s, passed={verdict['passed']}")
    print(f"restore onto live  : {in_place_s:6.2f} s, {in_place.written} files written (identical skipped)")
    print(json.dumps(figures))
    return 0 if verdict["passed"] and again.copied_bytes == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
