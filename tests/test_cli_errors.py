"""The command line through its real entry point: errors a person can act on, and ``memport run``
skipping dumps unchanged since their live import (issue 10, §7)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from pipelines.cli.main import main
from pipelines.store.catalog import build_catalog
from pipelines.store.episodes import EpisodeStore
from pipelines.store.ingest import ingest_dump
from pipelines.store.locations import Location

REPO = Path(__file__).parent.parent
SAMPLE = REPO / "data" / "landing" / "mem0" / "get_all_v1_u481.json"


@pytest.fixture
def env(memport_env: Path) -> Path:
    """Every memport setting under tmp_path; the working directory has no .env."""
    return memport_env


def test_unknown_system_is_named_without_a_traceback(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--system", "mem1"]) == 2
    err = capsys.readouterr().err
    assert "unknown system 'mem1'" in err and "mem0" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("day", "says"), [("2025-02-30", "day is out of range for month"), ("2099-01-01", "to today")]
)
def test_invalid_snapshot_day(env: Path, capsys: pytest.CaptureFixture[str], day: str, says: str) -> None:
    assert main(["snapshot", "--day", day]) == 2
    err = capsys.readouterr().err
    assert err.startswith("memport snapshot: --day ") and day in err.splitlines()[0]
    assert says in err and "Traceback" not in err


def test_mistyped_table_in_sql(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "SELECT 1"]) == 2  # no catalog yet: says how to make one
    assert "run `make run`" in capsys.readouterr().err
    build_catalog(EpisodeStore.from_url(str(env / "store")), env / "episodes.duckdb")
    assert main(["sql", "SELECT * FROM episodez"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("memport sql: Catalog Error: Table with name episodez does not exist")
    assert 'Did you mean "episodes"' in err and "Traceback" not in err


def test_export_metadata_filter(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = EpisodeStore.from_url(str(env / "store"))
    landing = Location.from_url(str(env / "landing"))
    (env / "landing" / "mem0").mkdir(parents=True)
    ts = "2025-03-01T01:37:03Z"
    (env / "landing" / "mem0" / "a.json").write_text(
        json.dumps(
            [
                {"id": str(i), "memory": "text", "user_id": "u", "metadata": {"lang": lang}, "created_at": ts}
                for i, lang in enumerate(("en", "de"))
            ]
        ),
        encoding="utf-8",
    )
    ingest_dump(store, landing, "mem0", "a.json", tenant_id="default")
    build_catalog(store, env / "episodes.duckdb")
    assert main(["export", "ndjson", "--tenant", "*", "--metadata", '{"lang": "en"}']) == 0
    out = capsys.readouterr().out
    assert ": READY, 1 rows" in out, out
    assert main(["export", "ndjson", "--metadata", '{"*": "en"}']) == 2
    err = capsys.readouterr().err
    assert "field 'metadata'" in err and "key '*'" in err and "Traceback" not in err
    assert main(["export", "ndjson", "--metadata", "lang=en"]) == 2
    assert "expected a JSON object" in capsys.readouterr().err


def test_failed_dump_prints_its_cause_and_unchanged_dumps_are_skipped(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mem0 = env / "landing" / "mem0"
    mem0.mkdir(parents=True)
    shutil.copy(SAMPLE, mem0 / "good.json")
    with zipfile.ZipFile(mem0 / "bad.zip", "w") as z:
        z.writestr("notes.txt", "not an OpenMemory backup")

    assert main(["run", "--system", "mem0"]) == 1
    out = capsys.readouterr().out
    assert "ingest mem0/bad.zip … FAILED: DumpFormatError:" in out
    assert "a zip archive with: notes.txt" in out
    assert f"{mem0 / 'bad.zip'}: DumpFormatError:" in out  # the summary names the file
    assert "DagsterExecutionStepExecutionError" not in out and "Error occurred while executing" not in out
    assert "ingest mem0/good.json … 77 accepted, 3 rejected, 0 duplicate" in out
    manifests = sorted((env / "store" / "imports").rglob("2*.json"))
    assert len(manifests) == 1, out

    assert main(["run", "--system", "mem0"]) == 1  # the bad dump still fails, the good one is skipped
    out = capsys.readouterr().out
    assert "ingest mem0/good.json … unchanged since import" in out
    assert "skipped       : 1 dump(s) unchanged" in out
    assert sorted((env / "store" / "imports").rglob("2*.json")) == manifests, "nothing re-imported"


def test_unchanged_dump_is_skipped_unless_forced_or_changed(tmp_path: Path) -> None:
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    landing = Location.from_url(str(tmp_path / "landing"))
    (tmp_path / "landing" / "mem0").mkdir(parents=True)
    dump = tmp_path / "landing" / "mem0" / "d.json"
    shutil.copy(SAMPLE, dump)
    first = ingest_dump(store, landing, "mem0", "d.json", tenant_id="t")
    again = ingest_dump(store, landing, "mem0", "d.json", tenant_id="t")
    assert again.skipped and again.manifest["ingest_id"] == first.manifest["ingest_id"]
    assert not ingest_dump(store, landing, "mem0", "d.json", tenant_id="t", force=True).skipped
    assert not ingest_dump(store, landing, "mem0", "d.json", tenant_id="other").skipped
    data = bytearray(dump.read_bytes())  # same size, one byte changed: the sha256 tells
    data[data.index(b"peanuts")] = ord("P")
    dump.write_bytes(bytes(data))
    changed = ingest_dump(store, landing, "mem0", "d.json", tenant_id="other")
    assert not changed.skipped and changed.manifest["dump_bytes"] == len(data)
    assert len(list((tmp_path / "store" / "imports").rglob("2*.json"))) == 4
