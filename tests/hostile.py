"""Run hostile dumps in a child process under a memory bound, so a regression fails instead of
taking the machine down.

:func:`ingest_bounded` lays the given files out as a landing zone, ingests every dump of it in a
fresh Python process through ``pipelines.store.ingest.ingest_dump`` (the code path the Dagster
asset and ``memport run`` share), and returns, per dump, its counts and rejects by reason or the
error that failed it, with the child's wall time and peak resident memory. A watchdog polls the
child's resident memory and kills it past ``kill_at`` bytes (default 1.5 GiB): the test then fails
on the returned ``killed`` flag rather than the kernel's OOM killer choosing a victim.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIB = 1 << 30
#: The repository's root, on the children's import path.
ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, sys, time, traceback
from pipelines.store.episodes import EpisodeStore
from pipelines.store.ingest import discover_dumps, ingest_dump
from pipelines.store.locations import Location

base, systems, tenant, templates = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
landing = Location.from_url(f"{base}/landing")
store = EpisodeStore.from_url(f"{base}/store")
out = {}
started = time.perf_counter()
for system in systems:
    for rel in discover_dumps(landing, system):
        t0 = time.perf_counter()
        try:
            result = ingest_dump(store, landing, system, rel, tenant_id=tenant,
                                 scope_template=templates.get(system))
            out[f"{system}/{rel}"] = {"counts": dict(result.counts),
                                      "reasons": result.manifest["rejects_by_reason"],
                                      "seconds": time.perf_counter() - t0}
        except Exception as exc:
            out[f"{system}/{rel}"] = {"error": f"{type(exc).__name__}: {exc}"[:2000],
                                      "seconds": time.perf_counter() - t0}
from tests.hostile import own_peak_bytes
print(json.dumps({"dumps": out, "wall": time.perf_counter() - started, "peak": own_peak_bytes()}))
"""


@dataclass
class Outcome:
    dumps: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall: float = 0.0
    peak: int = 0
    killed: bool = False
    stderr: str = ""

    def counts(self, dump: str) -> dict[str, int]:
        found = self.dumps[dump]
        assert "counts" in found, f"{dump} failed: {found.get('error')}"
        return found["counts"]


def _status_bytes(pid: int | str, key: str) -> int | None:
    """A memory figure (``VmRSS``, ``VmHWM``) from ``/proc/<pid>/status``, in bytes; None without."""
    try:
        with Path(f"/proc/{pid}/status").open(encoding="utf-8") as f:
            for line in f:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def own_peak_bytes() -> int:
    """This process's own peak resident memory: ``VmHWM``, which starts afresh at ``exec``.

    Not ``ru_maxrss``: Linux carries it across fork and exec, so a child of a large test process
    (a pytest worker that built a big file) would report its parent's peak, and a bound on the
    child could fail, or a comparison of two children could not."""
    peak = _status_bytes("self", "VmHWM")
    if peak is None:  # not Linux: the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak


def _rss(pid: int) -> int:
    return _status_bytes(pid, "VmRSS") or 0


def run_bounded(args: list[str], *, kill_at: int, timeout: float) -> tuple[str, str, int, bool]:
    """Run a child; kill it when its resident memory passes ``kill_at`` or time runs out.

    Returns (stdout, stderr, highest RSS seen by the watchdog, killed)."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}  # the child imports tests.hostile, whatever its cwd
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = 0
    killed = False

    def watch() -> None:
        nonlocal seen, killed
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            rss = _rss(proc.pid)
            seen = max(seen, rss)
            if rss > kill_at or time.monotonic() > deadline:
                killed = True
                proc.kill()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    watcher.join()
    return stdout, stderr, seen, killed


def ingest_bounded(
    base: Path,
    files: dict[str, bytes | Callable[[Path], None]],
    *,
    tenant: str = "acme",
    templates: dict[str, str] | None = None,
    kill_at: int = 3 * GIB // 2,
    timeout: float = 120.0,
) -> Outcome:
    """Ingest ``files`` in a bounded child: ``"<system>/<name>"`` → the bytes, or a function that
    writes the file at the path it is given (for files too large to build in the test's memory)."""
    systems: list[str] = []
    for rel, data in files.items():
        path = base / "landing" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            data(path)
        if rel.split("/")[0] not in systems:
            systems.append(rel.split("/")[0])
    args = [sys.executable, "-c", _CHILD, str(base), json.dumps(systems), tenant, json.dumps(templates or {})]
    stdout, stderr, seen, killed = run_bounded(args, kill_at=kill_at, timeout=timeout)
    if killed or not stdout.strip():
        return Outcome(peak=seen, killed=killed, stderr=stderr[-4000:])
    result = json.loads(stdout.strip().splitlines()[-1])
    return Outcome(result["dumps"], result["wall"], max(result["peak"], seen), False, stderr[-4000:])
