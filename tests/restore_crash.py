"""Kill a restore with SIGKILL at chosen instants, in a real child process, and judge what it left.

:func:`restore_killed` runs ``restore(..., overwrite=True)`` in a fresh Python process whose audit
hook (``sys.addaudithook``) counts every filesystem change under a watched folder (a file opened
for writing, a rename, a removal). At the ``kill_at``-th change the child sends itself SIGKILL,
either before that change happens (``delay`` 0: a deterministic instant between two steps) or
``delay`` seconds later from a thread, while the main thread is inside the change (mid-write).
``kill_at`` 0 lets the restore finish and reports how many changes it made and how long they took,
so the trials can be spread over the whole restore whatever its implementation.

:func:`store_state_problems` lists what makes a store unusable: a committed import manifest that
does not parse, a live manifest naming a missing file or one whose size or sha256 is not a known
good one, a partition whose live manifest is neither its old one nor the snapshot's, a catalog
that cannot be built or read.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipelines.store.catalog import build_catalog, connect
from pipelines.store.episodes import EpisodeStore

_CHILD = r"""
import json, os, signal, sys, threading, time
from pipelines.backups.restore import restore
from pipelines.store.episodes import EpisodeStore
from pipelines.store.locations import Location

backup, day, store_url, catalog, watch, kill_at, delay = sys.argv[1:8]
kill_at, delay = int(kill_at), float(delay)
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
CHANGES = ("os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate")
state = {"seen": 0, "first": None}

def changed_path(event, args):
    if event == "open":
        path, mode, flags = args
        if isinstance(mode, str):
            writes = any(c in mode for c in "wax+")
        else:
            writes = bool(flags & WRITES)
        return path if writes else None
    return args[0] if event in CHANGES else None

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def later():
    time.sleep(delay)
    die()

def hook(event, args):
    path = changed_path(event, args)
    if not isinstance(path, (str, bytes)) or not os.path.abspath(os.fsdecode(path)).startswith(watch):
        return
    state["seen"] += 1
    state["first"] = state["first"] or time.perf_counter()
    if state["seen"] == kill_at:
        if delay <= 0:
            die()
        threading.Thread(target=later, daemon=True).start()

sys.addaudithook(hook)
result = restore(Location.from_url(backup), day, EpisodeStore.from_url(store_url), catalog, overwrite=True)
spent = time.perf_counter() - (state["first"] or time.perf_counter())
print(json.dumps({"changes": state["seen"], "seconds": spent, "day": result.day}))
"""


@dataclass(frozen=True)
class ChildRun:
    killed: bool
    changes: int
    seconds: float
    stderr: str


def restore_killed(
    backup: str, day: str, store: Path, catalog: Path, *, kill_at: int, delay: float = 0.0
) -> ChildRun:
    """Restore ``day`` of ``backup`` over ``store`` in a child killed at change ``kill_at`` (0: never)."""
    watch = str(store.parent.resolve())
    args = [sys.executable, "-c", _CHILD, backup, day, str(store), str(catalog), watch]
    proc = subprocess.run(
        [*args, str(kill_at), str(delay)], capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode == -signal.SIGKILL:
        return ChildRun(True, kill_at, 0.0, proc.stderr[-2000:])
    if proc.returncode != 0:
        raise AssertionError(f"the restore child failed on its own (rc {proc.returncode}):\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return ChildRun(False, out["changes"], out["seconds"], proc.stderr[-2000:])


def clone_store(src: Path, dst: Path) -> None:
    """Copy a local store; its import manifests name files by absolute path, so re-root them."""
    shutil.copytree(src, dst)
    old, new = f'"{src.resolve()}/', f'"{dst.resolve()}/'
    for manifest in (dst / "imports").glob("*/*/*.json"):
        manifest.write_text(manifest.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")


def live_manifests(store: EpisodeStore) -> dict[str, str]:
    """partition → path (relative to the store) of its live import manifest."""
    root = store.location.root + "/"
    newest: dict[str, str] = {}
    for path in sorted(store.fs.glob(store.location.path("imports", "*", "*", "*.json"))):
        rel = path.removeprefix(root)
        newest[rel.rsplit("/", 1)[0]] = rel
    return newest


def sha256_of(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def store_state_problems(
    store: EpisodeStore,
    catalog: Path,
    scratch: Path,
    *,
    allowed_live: dict[str, set[str | None]],
    good_sha: dict[str, set[str]],
) -> list[str]:
    """What is wrong with ``store`` (and its catalog file) as a reader would find it; [] if nothing."""
    problems: list[str] = []
    root = store.location.root + "/"
    for path in store.fs.glob(store.location.path("imports", "*", "*", "*.json")):
        try:
            json.loads(Path(path).read_bytes())
        except ValueError as exc:
            problems.append(f"committed manifest {path} does not parse: {exc}")
    if problems:
        return problems
    live = live_manifests(store)
    for partition in set(allowed_live) | set(live):
        if live.get(partition) not in allowed_live.get(partition, {None}):
            problems.append(
                f"{partition}: live manifest {live.get(partition)} is neither the old nor the new"
            )
    for rel in live.values():
        manifest = json.loads(Path(store.location.path(rel)).read_bytes())
        for f in manifest["files"]["episodes"] + manifest["files"]["rejects"]:
            where = f"{f['path']} (named by {rel})"
            if not Path(f["path"]).is_file():
                problems.append(f"{where} is missing")
            elif (size := Path(f["path"]).stat().st_size) != f["bytes"]:
                problems.append(f"{where} has {size} bytes, the manifest says {f['bytes']}")
            elif sha256_of(f["path"]) not in good_sha.get(f["path"].removeprefix(root), set()):
                problems.append(f"{where} has content that is neither the old nor the restored")
    if problems:
        return problems
    try:
        build_catalog(store, scratch / "fresh.duckdb")
        for path in (scratch / "fresh.duckdb", catalog):
            if path.exists():
                with connect(path) as con:
                    for view in ("episodes", "episode_log", "rejects"):
                        con.sql(f"SELECT count(*), sum(hash(t)::HUGEINT) FROM {view} t").fetchall()
    except Exception as exc:  # any failure to build or read is the finding
        problems.append(f"the catalog cannot be built or read: {type(exc).__name__}: {exc}")
    return problems
