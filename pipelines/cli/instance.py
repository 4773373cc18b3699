"""The Dagster instance the command line runs in: set up once, safely, and cleaned of dead runs.

- ``$DAGSTER_HOME`` is created when missing, and ``$DAGSTER_HOME/dagster.yaml`` written from
  ``pipelines/orchestration/dagster.yaml`` (``make`` does the same): SQLite storage under
  ``$DAGSTER_HOME``, run monitoring on (the daemon fails runs whose worker died), telemetry off.
- Creating the instance's storage is done under a file lock: two first runs on a fresh
  ``DAGSTER_HOME`` otherwise race to create the same tables (``alembic_version``).
- ``memport`` runs its jobs in its own process, where no daemon watches: a run it left
  ``STARTED`` when it was killed is marked failed by the next command, once its process is
  provably gone (no such process, or a newer one with the same id).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).parent.parent / "orchestration" / "dagster.yaml"


@contextlib.contextmanager
def _setup_lock(home: Path) -> Iterator[None]:
    with open(home / ".memport-setup.lock", "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def dagster_home() -> Path:
    """``$DAGSTER_HOME`` made absolute (Dagster refuses a relative one) and created if missing."""
    home = Path(os.environ["DAGSTER_HOME"]).expanduser().resolve()
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    return home


def ensure_instance_config() -> Path:
    """``$DAGSTER_HOME/dagster.yaml`` from the template when missing (an existing one is kept), so
    Dagster never runs on an unconfigured instance: it would say so ("No dagster instance
    configuration file") and print its telemetry banner. Every ``memport`` command calls this."""
    home = dagster_home()
    config = home / "dagster.yaml"
    if not config.exists():
        with _setup_lock(home):
            if not config.exists():
                tmp = config.with_name(f".dagster.yaml.{os.getpid()}.tmp")
                shutil.copyfile(TEMPLATE, tmp)
                tmp.replace(config)  # never a half-written file under a concurrent reader
    return config


@contextlib.contextmanager
def open_instance() -> Iterator[Any]:
    """``dg.DagsterInstance.get()``, after the set-up above; disposed on exit."""
    import dagster as dg

    home = ensure_instance_config().parent
    with _setup_lock(home):
        instance = dg.DagsterInstance.get()
        try:
            dead = fail_dead_runs(instance)  # also creates the storage, still under the lock
        except BaseException:
            instance.dispose()
            raise
    if dead:
        print(
            f"marked {len(dead)} run(s) failed that a killed memport left STARTED: {', '.join(dead)}",
            file=sys.stderr,
        )
    with instance:
        yield instance


def fail_dead_runs(instance: Any) -> list[str]:
    """Mark failed the ``STARTED`` runs whose process is gone; returns their run ids."""
    import dagster as dg

    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_START).records
        if not records:
            continue
        entry = records[-1].event_log_entry
        pid = entry.dagster_event.pid if entry.dagster_event else None
        if pid is None or pid == os.getpid() or _alive_since(pid, entry.timestamp):
            continue
        instance.report_run_failed(
            run, f"the process that ran it (pid {pid}) is gone: killed or crashed, found by memport"
        )
        failed.append(run.run_id)
    return failed


def _alive_since(pid: int, timestamp: float) -> bool:
    """Whether process ``pid`` exists and was started before ``timestamp`` (so it is that run's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, someone else's
    started = _start_time(pid)
    return started is None or started <= timestamp + 1


def _start_time(pid: int) -> float | None:
    """When the process started (Linux ``/proc``), or None where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text(encoding="utf-8").splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError):
        return None
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the command name
    return boot + ticks / os.sysconf("SC_CLK_TCK")
