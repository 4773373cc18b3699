"""The command line's Dagster instance (issue 10, §6): set up once when two first runs race, with
run monitoring on, and runs a killed ``memport`` left STARTED are failed by the next command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.cli.instance import open_instance

REPO = Path(__file__).parent.parent

_OPEN = textwrap.dedent(
    """
    from pipelines.cli.instance import open_instance
    with open_instance() as instance:
        instance.get_runs(limit=1)
    print("ok")
    """
)

#: A job whose op says it started, then hangs: the process is killed (or left running) under it.
_HANG = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import dagster as dg

    @dg.op
    def hang() -> None:
        Path(sys.argv[1]).write_text("started")
        time.sleep(600)

    @dg.job
    def hanging() -> None:
        hang()

    with dg.DagsterInstance.get() as instance:
        hanging.execute_in_process(instance=instance)
    """
)


def test_first_runs_racing_on_a_fresh_home_set_it_up_once(tmp_path: Path) -> None:
    env = os.environ | {"DAGSTER_HOME": str(tmp_path / "dagster")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 3, [err.decode()[-400:] for _, err in results]
    config = yaml.safe_load((tmp_path / "dagster" / "dagster.yaml").read_text(encoding="utf-8"))
    assert config["run_monitoring"]["enabled"] is True


def _start_hanging(tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    marker = tmp_path / f"{name}.started"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HANG, str(marker)],
        env=os.environ | {"DAGSTER_HOME": str(tmp_path / "dagster")},
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the hanging job did not start"
        time.sleep(0.1)
    return proc, marker


def test_runs_left_started_by_a_killed_process_are_failed_by_the_next_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    with open_instance():
        pass  # set up first, so the two jobs below do not race for it
    killed, _ = _start_hanging(tmp_path, "killed")
    alive, _ = _start_hanging(tmp_path, "alive")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        with open_instance() as instance:
            runs = instance.get_runs()
            statuses = sorted(r.status.value for r in runs)
            messages = [
                e.message
                for r in runs
                for e in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            ]
        assert statuses == ["FAILURE", "STARTED"]
        assert any(f"pid {killed.pid}" in m and "gone" in m for m in messages), messages
        assert "marked 1 run(s) failed" in capsys.readouterr().err
    finally:
        alive.kill()
        alive.wait(timeout=30)
