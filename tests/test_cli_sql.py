"""``memport sql`` for analysts (issue 11, §4): every column, ``--format table|csv|json``, the limit
applied in SQL, and long text never silently cut."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipelines.cli.main import main
from pipelines.store.catalog import build_catalog
from pipelines.store.episodes import EpisodeStore
from pipelines.store.ingest import ingest_dump
from pipelines.store.locations import Location
from tests.hostile import ROOT

#: A record text an analyst must get back byte for byte: separators, quotes, newlines, non-ASCII.
LONG = 'Line one, with "quotes"; and a comma.\nLine two: café ☕ ' + "x" * 3000 + " =SUM(A1) end"


def _no_constants(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def strict_json(line: str) -> Any:
    """json.loads without Python's NaN/Infinity extensions: what other JSON readers accept."""
    return json.loads(line, parse_constant=_no_constants)


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMPORT_CATALOG_PATH", str(tmp_path / "episodes.duckdb"))
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    (tmp_path / "landing" / "mem0").mkdir(parents=True)
    records = [
        {
            "id": "long",
            "memory": LONG,
            "user_id": "u1",
            "categories": ["a", "b"],
            "created_at": "2025-03-01T01:37:03Z",
        },
        *(
            {"id": str(i), "memory": f"short {i}", "user_id": "u2", "created_at": "2025-03-02T00:00:00+02:00"}
            for i in range(9)
        ),
    ]
    (tmp_path / "landing" / "mem0" / "d.json").write_text(json.dumps(records), encoding="utf-8")
    ingest_dump(store, Location.from_url(str(tmp_path / "landing")), "mem0", "d.json", tenant_id="t")
    build_catalog(store, tmp_path / "episodes.duckdb")
    return tmp_path / "episodes.duckdb"


def episode_columns(catalog: Path) -> list[str]:
    with duckdb.connect(str(catalog), read_only=True) as con:
        return con.sql("FROM episodes LIMIT 0").columns


def sql(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    capsys.readouterr()
    assert main(["sql", *argv]) == 0
    out, err = capsys.readouterr()
    return out, err


def test_table_shows_every_column(catalog: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = sql(capsys, "SELECT * FROM episodes ORDER BY source_id")
    columns = episode_columns(catalog)
    assert len(columns) > 8
    missing = [c for c in columns if c not in out]
    assert not missing, f"columns not shown: {missing}"
    assert "10 rows" in out


def test_table_says_when_it_cuts_text(catalog: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = sql(capsys, "SELECT source_id, content FROM episodes WHERE source_id = 'long'")
    assert "x" * 200 not in out, "the table cuts long text for display"
    assert "…" in out
    assert "cut" in out and "--format csv" in out and "--max-width 0" in out
    out, _ = sql(
        capsys, "SELECT source_id, content FROM episodes WHERE source_id = 'long'", "--max-width", "0"
    )
    assert "x" * 3000 in out and "cut" not in out
    out, _ = sql(capsys, "SELECT source_id FROM episodes")  # nothing long: no note
    assert "cut" not in out


def test_csv_has_every_column_and_whole_text(catalog: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, err = sql(capsys, "SELECT * FROM episodes ORDER BY source_id", "--format", "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == episode_columns(catalog)
    assert len(rows) == 11 and err == ""
    record = dict(zip(rows[0], rows[-1], strict=True))
    assert record["source_id"] == "long" and record["content"] == LONG
    assert json.loads(record["categories"]) == ["a", "b"], "lists as JSON text"
    created = datetime.fromisoformat(record["created_at"])
    assert created.utcoffset() is not None and created.isoformat().startswith("2025-03-01T01:37:03")


def test_json_is_one_object_per_line_with_whole_text(
    catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, err = sql(capsys, "SELECT * FROM episodes ORDER BY source_id", "--format", "json")
    records = [strict_json(line) for line in out.splitlines()]
    assert len(records) == 10 and err == ""
    assert all(list(r) == episode_columns(catalog) for r in records)
    assert records[-1]["content"] == LONG and records[-1]["categories"] == ["a", "b"]
    assert records[-1]["dump_record"] == 0, "numbers stay numbers"
    assert datetime.fromisoformat(records[0]["created_at"]) == datetime.fromisoformat(
        "2025-03-01T22:00:00+00:00"
    )


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_limit_is_applied_in_sql(catalog: Path, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    """A trillion rows with --limit 3: only a query that asks for 3 rows returns at once."""
    started = time.monotonic()
    out, err = sql(
        capsys,
        "SELECT i, 'row ' || i AS label FROM range(1000000000000) t(i)",
        "--limit",
        "3",
        "--format",
        fmt,
    )
    assert time.monotonic() - started < 10
    assert "row 2" in out and "row 3" not in out
    says = out if fmt == "table" else err
    assert "first 3 rows" in says and "--limit" in says, "says that more rows exist"
    if fmt != "table":
        assert "row 0" not in err and "first 3" not in out, "the note goes to stderr, never into the data"


def test_table_limit_defaults_to_50_and_0_means_all(
    catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = sql(capsys, "SELECT 'r' || i AS r FROM range(60) t(i)")
    assert "r49" in out and "r50" not in out and "first 50 rows" in out
    out, _ = sql(capsys, "SELECT 'r' || i AS r FROM range(60) t(i)", "--limit", "0")
    assert "r59" in out and "60 rows" in out
    out, err = sql(capsys, "SELECT i FROM range(60) t(i)", "--format", "csv")  # csv: every row
    assert out.splitlines() == ["i", *map(str, range(60))] and err == ""


def test_awkward_types_and_statements(catalog: Path, capsys: pytest.CaptureFixture[str]) -> None:
    query = (
        "SELECT 1 AS a, 2 AS a, 'nan'::DOUBLE AS nan, 'inf'::DOUBLE AS inf, 1.50 AS dec, "
        "170141183460469231731687303715884105727::HUGEINT AS huge, INTERVAL 3 DAY AS iv, "
        "'\\xAA'::BLOB AS bl, "
        "[{'t': TIMESTAMPTZ '2025-01-01 00:00:00+00'}] AS nested, MAP {'k': 1} AS m, NULL AS n, "
        "TIMESTAMP '2025-01-02 03:04:05' AS naive, DATE '2025-01-02' AS d, uuid() AS u, '101'::BIT AS bits"
    )
    out, _ = sql(capsys, query, "--format", "json")
    (record,) = [strict_json(line) for line in out.splitlines()]
    assert record["a"] == 1 and record["a_1"] == 2, "duplicate names get distinct keys"
    assert record["nan"] == "nan" and record["inf"] == "inf"
    assert record["dec"] == 1.5 and record["huge"] == 170141183460469231731687303715884105727
    assert record["nested"][0]["t"] and record["m"] == {"k": 1} and record["n"] is None
    assert record["naive"] == "2025-01-02T03:04:05" and record["d"] == "2025-01-02"
    out, _ = sql(capsys, query, "--format", "csv")
    header, row = csv.reader(io.StringIO(out))
    assert header[:2] == ["a", "a"] and row[:2] == ["1", "2"] and len(row) == len(header)
    assert row[header.index("naive")] == "2025-01-02T03:04:05"
    out, _ = sql(capsys, query)
    assert "3 days" in out and "1 row" in out
    for statement in (
        "SHOW TABLES",
        "DESCRIBE episodes",
        "PRAGMA version",
        "SELECT 1;",
        "-- note\nFROM episodes",
    ):
        for fmt in ("table", "csv", "json"):
            out, _ = sql(capsys, statement, "--format", fmt)
            assert out.strip(), (statement, fmt)


def test_empty_result(catalog: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = sql(capsys, "SELECT source_id, content FROM episodes WHERE false", "--format", "csv")
    assert out == "source_id,content\n", "the header, even without rows"
    out, _ = sql(capsys, "SELECT source_id FROM episodes WHERE false", "--format", "json")
    assert out == ""
    out, _ = sql(capsys, "SELECT source_id FROM episodes WHERE false")
    assert "0 rows" in out


def test_csv_and_json_stream_without_holding_the_result(catalog: Path) -> None:
    """Six times the output (300 MB instead of 50 MB), the same resident memory: written in batches."""

    def peak_mib(fmt: str, rows: int) -> float:
        query = f"SELECT i, repeat('x', 500) AS pad FROM range({rows}) t(i)"
        code = (
            "import sys; from pipelines.cli.main import main; from tests.hostile import own_peak_bytes; "
            f"rc = main(['sql', {query!r}, '--format', {fmt!r}]); "
            "print(own_peak_bytes() // 1024, file=sys.stderr); sys.exit(rc)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=os.environ | {"MEMPORT_CATALOG_PATH": str(catalog), "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return int(out.stderr.split()[-1]) / 1024

    small = peak_mib("csv", 100_000)
    big = {fmt: peak_mib(fmt, 600_000) for fmt in ("csv", "json")}
    assert all(peak - small < 100 for peak in big.values()), (small, big)


def test_a_reader_that_stops_early_is_no_error(catalog: Path) -> None:
    """``memport sql … --format csv | head -1``: no traceback when the pipe closes."""
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "memport"),
            "sql",
            "SELECT i FROM range(100000000) t(i)",
            "--format",
            "csv",
        ],
        env=os.environ | {"MEMPORT_CATALOG_PATH": str(catalog)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"i\n"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err, err
