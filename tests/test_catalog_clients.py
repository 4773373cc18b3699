"""The catalog the main job builds opens in the DuckDB clients analysts have (issue 11, §2).

The ``duckdb`` command line from PyPI (``duckdb-cli``, a test extra) is older than the ``duckdb``
library that writes the catalog: the file must be written in a storage version it reads. The
README's example queries are taken from README.md itself, so the test fails when it drifts.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.cli.main import main
from pipelines.store.catalog import cli_command
from tests.conftest import memport_settings

REPO = Path(__file__).parent.parent
#: The newest storage version the DuckDB 1.4 LTS line reads (1.5.x reads up to 68, 2.0 writes 69).
OLDEST_CLIENTS_READ = 67


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``memport run`` (in process) on a copy of the shipped samples; the catalog it built."""
    tmp = tmp_path_factory.mktemp("main_job")
    shutil.copytree(REPO / "data" / "landing", tmp / "landing")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        for name, value in memport_settings(tmp).items():
            mp.setenv(name, value)
        mp.setenv("MEMPORT_SCOPE_TEMPLATES", "")
        assert main(["run"]) == 0
        yield tmp / "episodes.duckdb"


def duckdb_cli() -> Path:
    """The real ``duckdb`` binary inside the ``duckdb-cli`` package of this venv."""
    spec = importlib.util.find_spec("duckdb_cli")
    assert spec is not None and spec.submodule_search_locations, "install the test extra (duckdb-cli)"
    binary = Path(next(iter(spec.submodule_search_locations))) / "duckdb"
    assert binary.is_file(), f"duckdb-cli ships no binary at {binary}"
    return binary


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def readme_sql_examples() -> list[str]:
    """Every statement of the ```sql blocks of "Querying the catalog"."""
    blocks = re.findall(r"```sql\n(.*?)```", readme_section("Querying the catalog"), flags=re.S)
    statements = [s.strip() for block in blocks for s in re.split(r";\s*\n", block)]
    return [s for s in statements if s and not all(line.startswith("--") for line in s.splitlines())]


def run_cli(catalog: Path, sql: str, cwd: Path) -> list[dict[str, object]]:
    out = subprocess.run(
        [str(duckdb_cli()), "-no-init", "-readonly", "-json", str(catalog), "-c", sql],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and not out.stderr, f"{sql}\n{out.stderr}"
    rows: list[dict[str, object]] = json.loads(out.stdout or "[]")
    return rows


def test_the_readme_has_example_queries() -> None:
    examples = readme_sql_examples()
    assert len(examples) >= 3
    assert any("episodes_as_of(" in s for s in examples), "the table macro is shown"


def test_catalog_is_written_in_a_storage_version_older_clients_read(catalog: Path) -> None:
    header = catalog.read_bytes()[8:20]  # after the checksum: magic, then the storage version number
    assert header[:4] == b"DUCK"
    assert struct.unpack("<Q", header[4:])[0] == OLDEST_CLIENTS_READ


@pytest.mark.parametrize("sql", readme_sql_examples())
def test_readme_examples_run_in_the_duckdb_cli(catalog: Path, sql: str, tmp_path: Path) -> None:
    # another working directory: the views name the store's files by absolute path
    rows = run_cli(catalog, sql, cwd=tmp_path)
    assert rows, f"no rows from the README's example:\n{sql}"


def test_every_view_and_table_opens_in_the_duckdb_cli(catalog: Path, tmp_path: Path) -> None:
    names = run_cli(catalog, "SELECT table_name FROM information_schema.tables ORDER BY 1", tmp_path)
    found = {str(r["table_name"]) for r in names}
    assert {"episodes", "episode_log", "rejects", "imports", "exports", "snapshots"} <= found
    for name in sorted(found):
        quoted = '"' + name.replace('"', '""') + '"'
        run_cli(catalog, f"SELECT count(*) AS n FROM {quoted}", tmp_path)


def test_readme_attach_example_works_in_the_duckdb_cli(catalog: Path, tmp_path: Path) -> None:
    """An analyst's own database that ATTACHes the catalog read-only (README), macro included."""
    blocks = re.findall(r"```sh\n(duckdb .*?)```", readme_section("Querying the catalog"), flags=re.S)
    attach = [b for b in blocks if "ATTACH 'data/episodes.duckdb'" in b]
    assert len(attach) == 1
    sql = attach[0].split("\n", 1)[1]  # after the line that starts the CLI
    sql = sql.replace("'data/episodes.duckdb'", "'" + str(catalog).replace("'", "''") + "'")
    sql += "SELECT count(*) AS n FROM my_facts; SELECT count(*) AS n FROM memport.episodes_as_of(now());"
    out = subprocess.run(
        [str(duckdb_cli()), "-no-init", "-jsonlines", str(tmp_path / "analyst.duckdb"), "-c", sql],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and not out.stderr, out.stderr
    counts = [json.loads(line)["n"] for line in out.stdout.splitlines() if line.startswith('{"n":')]
    assert len(counts) == 2 and counts[1] > 0, out.stdout


def test_readme_memport_sql_examples_run(catalog: Path, capsys: pytest.CaptureFixture[str]) -> None:
    commands = re.findall(
        r"^\.venv/bin/memport (sql .*)$", readme_section("Querying the catalog"), flags=re.M
    )
    assert commands
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEMPORT_CATALOG_PATH", str(catalog))
        mp.chdir(catalog.parent)
        for command in commands:
            capsys.readouterr()
            argv = shlex.split(re.split(r"\s[>|]\s", command)[0])  # not the shell's redirection
            assert main(argv) == 0, command
            out, err = capsys.readouterr()
            assert out.strip() and not err, command


def test_the_printed_command_opens_the_catalog_with_the_footer_cache(catalog: Path, tmp_path: Path) -> None:
    """The command ``memport run`` prints, run as printed (shell words), in the real CLI."""
    words = shlex.split(cli_command(catalog))
    assert words[0] == "duckdb"
    sql = "SELECT current_setting('parquet_metadata_cache') AS cache, count(*) AS n FROM episodes"
    out = subprocess.run(
        [str(duckdb_cli()), "-no-init", *words[1:], "-json", "-c", sql],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and not out.stderr, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["cache"] is True and row["n"] > 0
