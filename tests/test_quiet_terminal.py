"""A newcomer's terminal (issue 13, §5): on a fresh ``DAGSTER_HOME`` that does not exist yet, the
command line and a definitions load print no preview warning, no "no dagster.yaml" warning and no
telemetry banner; the instance is configured instead (SQLite under DAGSTER_HOME, telemetry off)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import memport_settings
from tests.test_store import mem0_dump

REPO = Path(__file__).parent.parent
NOISE = ("PreviewWarning", "No dagster instance configuration file", "Telemetry", "Welcome to Dagster")


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(n in line for n in NOISE)]


def test_memport_on_a_fresh_home_is_quiet_and_configures_the_instance(tmp_path: Path) -> None:
    env = os.environ | memport_settings(tmp_path) | {"DAGSTER_HOME": str(tmp_path / "not" / "yet")}
    landing = tmp_path / "landing" / "mem0"
    landing.mkdir(parents=True)
    (landing / "a.json").write_text(mem0_dump(3), encoding="utf-8")
    memport = str(Path(sys.executable).parent / "memport")
    out = subprocess.run(
        [memport, "run", "--system", "mem0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 accepted" in out.stdout
    assert _noise(out.stderr) == [], out.stderr
    config = yaml.safe_load((tmp_path / "not" / "yet" / "dagster.yaml").read_text(encoding="utf-8"))
    assert config["telemetry"] == {"enabled": False}
    assert "storage" not in config  # Dagster's default: SQLite under DAGSTER_HOME, said in a comment
    assert config["run_monitoring"]["enabled"] is True
    assert (tmp_path / "not" / "yet" / "history").is_dir()  # SQLite storage, under DAGSTER_HOME

    # a second command on the same home: still quiet, and an edited copy is never overwritten
    (tmp_path / "not" / "yet" / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n# mine\n", encoding="utf-8"
    )
    again = subprocess.run(
        [memport, "snapshot"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert _noise(again.stderr) == [], again.stderr
    assert "# mine" in (tmp_path / "not" / "yet" / "dagster.yaml").read_text(encoding="utf-8")


def test_loading_the_definitions_prints_no_warning(tmp_path: Path) -> None:
    """Every warning shown (``-W default``): only the partitioned-check preview one is filtered."""
    env = os.environ | {"DAGSTER_HOME": str(tmp_path / "fresh")}
    code = (
        "import warnings, dagster as dg\n"
        "import pipelines.orchestration.definitions\n"
        "with warnings.catch_warnings(record=True) as seen:  # the filters in force, recorded\n"
        "    dg.AssetCheckSpec('c', asset='a', partitions_def=dg.StaticPartitionsDefinition(['x']))\n"
        "    warnings.warn('other preview', dg.PreviewWarning)\n"
        "print(sorted(str(w.message)[:13] for w in seen))\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    # the partitioned-check preview is ignored; any other preview warning still shows
    assert out.stdout.strip() == "['other preview']"


def test_dagster_cli_on_a_home_set_up_like_make_does_is_quiet(tmp_path: Path) -> None:
    """``make dev`` copies the template (``cp -n``) before starting Dagster on the workspace."""
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copyfile(REPO / "pipelines" / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=os.environ | {"DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert _noise(out.stdout + out.stderr) == [], out.stderr
