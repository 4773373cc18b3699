"""The restore check's scratch folders: a killed check's folder (a restored copy of the store) is
removed by the next check; a running check's folder is not (issue 10, §6)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from pipelines.backups.restore import prove
from pipelines.backups.scratch import PREFIX
from pipelines.backups.snapshot import take_snapshot
from pipelines.store.episodes import EpisodeStore
from pipelines.store.locations import Location
from tests.conftest import put
from tests.test_store import ingest, mem0_dump


def _folder(parent: Path, pid: int, name: str, age_s: float) -> Path:
    folder = parent / f"{PREFIX}{pid}-{name}"
    (folder / "store").mkdir(parents=True)
    (folder / "store" / "part.parquet").write_bytes(b"x" * 1000)
    old = time.time() - age_s
    os.utime(folder, (old, old))
    return folder


def test_the_next_restore_check_removes_what_killed_checks_left(tmp_path: Path) -> None:
    landing = Location.from_url(str(tmp_path / "landing"))
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    backup = Location.from_url(str(tmp_path / "backups"))
    put(landing, "mem0/a.json", mem0_dump(5))
    ingest(store, landing, "mem0", "a.json")
    day = datetime.now(UTC).date().isoformat()
    take_snapshot(store, backup, day)

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(gone.stdout)
    scratch = tmp_path / "scratch"
    killed = _folder(scratch, dead_pid, "killed", age_s=600)
    just_made = _folder(scratch, dead_pid, "young", age_s=0)  # too young to judge
    running = _folder(scratch, os.getpid(), "running", age_s=600)  # a live process's check
    ancient = _folder(scratch, os.getpid(), "ancient", age_s=3 * 86400)

    assert prove(backup, day, store, scratch=scratch)["passed"]
    assert not killed.exists() and not ancient.exists()
    assert just_made.exists() and running.exists()
    assert sorted(p.name for p in scratch.iterdir()) == sorted([just_made.name, running.name])
