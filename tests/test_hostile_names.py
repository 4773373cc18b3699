"""Names, scopes, tenants and store paths are text, never SQL or a path (issue 10, section 5).

Every string a person or a file gives memport — an export's name, a tenant, a scope, the folders
of the store, the landing zone and the backups, a dump's file name — goes through ingest, the
catalog, every export format (in parts), expiry, snapshot and restore holding quotes, semicolons,
newlines, ``../``, DuckDB's ``{i}`` and shell syntax. The data must round-trip and no file may
appear outside the folder it belongs in. And a symbolic link in the landing zone is never
followed out of it.
"""

from __future__ import annotations

import ast
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from connectors.errors import ExportNotFoundError
from connectors.kit.sql import quote_identifier, quote_list, quote_literal
from pipelines.backups.restore import prove, restore
from pipelines.backups.snapshot import take_snapshot
from pipelines.exports import lifecycle
from pipelines.exports.reimport import read_export
from pipelines.exports.request import MIN_PART_BYTES, ExportRequest
from pipelines.store.catalog import build_catalog, connect
from pipelines.store.episodes import EpisodeStore
from pipelines.store.locations import Location
from tests.hostile import ingest_bounded

#: Everything the issue lists: both quotes, a statement break, a comment, a newline, a way out of
#: the folder, DuckDB's part-number placeholder and shell command substitution.
NASTY = 'it\'s "q"; -- \n../../{i} $(touch pwned)'
#: The injection from the issue: closes FILENAME_PATTERN's literal and adds COPY options.
COPY_INJECTION = "pwn{i}', PER_THREAD_OUTPUT false, DATEFORMAT '"
NAMES = ["../../../X", "it's", COPY_INJECTION, NASTY, "..", "/etc/cron.d/x", "é ü"]
FORMATS = [("json", None), ("ndjson", None), ("csv", None), ("markdown", None), ("ndjson", "cortexdb"),
           ("csv", "mnueron")]  # fmt: skip
TODAY = datetime.now(UTC).date().isoformat()


def mem0_records(n: int, user: str) -> bytes:
    return json.dumps(
        [
            {
                "id": f"m'{i}\"; {{i}}",
                "memory": f"{NASTY} fact {i}",
                "user_id": user,
                "created_at": f"2025-01-01T00:00:{i % 60:02d}Z",
            }
            for i in range(n)
        ]
    ).encode()


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.mark.parametrize("text", [NASTY, COPY_INJECTION, "", "\\", "\\'", "''", '"', "a\r\nb", "ü😀"])
def test_quoting_round_trips_through_duckdb(text: str) -> None:
    with duckdb.connect() as con:
        assert con.sql(f"SELECT {quote_literal(text)}").fetchall() == [(text,)]
        assert con.sql(f"SELECT {quote_list([text, text])}").fetchall() == [([text, text],)]
        if text:
            con.execute(f"CREATE TABLE t ({quote_identifier(text)} VARCHAR)")
            assert [d[0] for d in con.sql("SELECT * FROM t").description] == [text]


def test_quoting_refuses_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        quote_literal("a\x00b")
    with pytest.raises(ValueError, match="NUL"):
        quote_identifier("a\x00b")


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EpisodeStore]:
    """A store under a folder whose path holds every hostile character, ingested in a child
    process (tests/hostile.py), with a hostile tenant, scope and dump file name. Shared by the
    tests of this module, each of which writes only into folders of its own."""
    base = tmp_path_factory.mktemp("names") / "x" / ".." / "st'o\"re; {i} $(touch pwned)\nend"
    outcome = ingest_bounded(base, {"mem0/d'u\"mp; {i} $(x)\n.json": mem0_records(40, NASTY)}, tenant=NASTY)
    (found,) = outcome.dumps.values()
    assert found.get("counts") == {"read": 40, "accepted": 40, "rejected": 0, "duplicate": 0}, found
    return base.resolve(), EpisodeStore.from_url(str(base / "store"))


@pytest.mark.parametrize("parts", [True, False], ids=["parts", "one-file"])
@pytest.mark.parametrize(("fmt", "profile"), FORMATS)
def test_hostile_names_round_trip_everywhere(
    hostile_store: tuple[Path, EpisodeStore], fmt: str, profile: str | None, parts: bool
) -> None:
    base, store = hostile_store
    own_folder = f"{fmt}-{profile}-{parts}"
    exports = Location.from_url(str(base / own_folder / "exp'orts\"; {i}"))
    tree = base.parent
    catalog = base / own_folder / "cat'a\"log.duckdb"
    summary = build_catalog(store, catalog, exports=exports)
    before = files_under(tree)
    assert (summary.episodes, summary.episode_versions) == (40, 40)
    with connect(catalog) as con:
        rows = con.execute("SELECT DISTINCT tenant_id, scope FROM episodes").fetchall()
        assert rows == [(NASTY, f"user:{NASTY}")]

    made = []
    for name in NAMES:
        request = ExportRequest.parse(
            {"format": fmt, "profile": profile, "name": name, "tenant_id": NASTY,
             "scope": f"user:{NASTY}", "max_part_bytes": MIN_PART_BYTES if parts else None}
        )  # fmt: skip
        m = lifecycle.export(store, exports, request)
        where = f"{fmt}/{profile} named {name!r}"
        assert m["status"] == lifecycle.READY, (where, m["error"])
        assert m["rows"] == 40, where
        assert m["name"] == name, where  # the label is kept as given
        own = Path(exports.path(m["id"]))
        assert m["files"], where
        for f in m["files"]:
            assert Path(f["url"]).parent == own, where
            assert "/" not in f["name"] and not f["name"].startswith("."), where
        # nothing but the manifest and the files it names in the export's folder
        assert {p.name for p in own.iterdir()} == {"manifest.json"} | {f["name"] for f in m["files"]}, where
        if fmt in ("json", "ndjson", "csv") and profile is None:
            content = []
            for f in m["files"]:
                for batch in read_export(exports, exports.path(m["id"], f["name"]), fmt):
                    content += batch.episodes["content"].to_list()
            assert sorted(content) == sorted(f"{NASTY} fact {i}" for i in range(40)), where
        if fmt == "markdown":
            text = "".join((own / f["name"]).read_text(encoding="utf-8") for f in m["files"])
            assert all(f"fact {i}" in text for i in range(40)), where
        made.append(m["id"])

    # a destination of the user's choosing, itself a hostile path: the files land in it, named
    # after the slug and the export's id
    dest = base / own_folder / "de'st\"; {i} $(x)"
    request = ExportRequest.parse(
        {"format": fmt, "profile": profile, "name": COPY_INJECTION, "tenant_id": NASTY,
         "destination": str(dest), "max_part_bytes": MIN_PART_BYTES if parts else None}
    )  # fmt: skip
    m = lifecycle.export(store, exports, request)
    assert (m["status"], m["rows"]) == (lifecycle.READY, 40), m["error"]
    assert {p.name for p in dest.iterdir()} == {f["name"] for f in m["files"]}
    assert all(
        f["name"].startswith(f"pwn_i_PER_THREAD_OUTPUT_false_DATEFORMAT-{m['id']}") for f in m["files"]
    )
    made.append(m["id"])

    # nothing appeared outside the exports folder and the destination
    new = files_under(tree) - before
    assert {p for p in new if not (p.is_relative_to(Path(exports.root)) or p.is_relative_to(dest))} == set()

    build_catalog(store, catalog, exports=exports)  # the exports view reads the hostile manifests
    with connect(catalog) as con:
        names = {r[0] for r in con.sql("SELECT name FROM exports").fetchall()}
    assert names == {*NAMES, COPY_INJECTION}

    # expiry removes every file it made, leaving the manifests only
    gone = lifecycle.expire(exports, now=datetime.now(UTC) + timedelta(days=365))
    assert sorted(gone) == sorted(made)
    left = files_under(Path(exports.root))
    assert {p.name for p in left} == {"manifest.json"}
    assert list(dest.iterdir()) == []


def test_hostile_store_path_snapshot_and_restore(hostile_store: tuple[Path, EpisodeStore]) -> None:
    base, store = hostile_store
    backup = Location.from_url(str(base / "back'ups\"; {i}"))
    tree = base.parent
    before = files_under(tree)

    take_snapshot(store, backup, TODAY)
    target = EpisodeStore.from_url(str(base / "rest'ored\"; $(x) {i}"))
    result = restore(backup, "latest", target, base / "rest'ored\".duckdb")
    assert result.episodes == 40
    with connect(base / "rest'ored\".duckdb") as con:
        assert con.sql("SELECT count(*) FROM episodes WHERE tenant_id = ?", params=[NASTY]).fetchall() == [
            (40,)
        ]
    (base / "scr'atch\"").mkdir()
    verdict = prove(backup, TODAY, store, scratch=base / "scr'atch\"")
    assert verdict["passed"], verdict

    allowed = [
        Path(backup.root),
        Path(target.location.root),
        base / "rest'ored\".duckdb",
        base / ".rest'ored\".duckdb.built",  # the catalog's stamp (pipelines.store.catalog_file)
        base / "scr'atch\"",
    ]
    new = files_under(tree) - before
    assert {p for p in new if not any(p == a or p.is_relative_to(a) for a in allowed)} == set()


SECRET = "root:SECRET-FIRST-LINE:0:0"


def test_landing_symlinks_out_of_the_landing_zone_are_refused(tmp_path: Path) -> None:
    """A link to a file outside the landing zone is refused, and nothing of the file is quoted."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd.csv").write_text(f"{SECRET}\nsecond line\n", encoding="utf-8")
    (outside / "dir").mkdir()
    (outside / "dir" / "other.csv").write_text(f"{SECRET}\n", encoding="utf-8")
    good = json.dumps([{"id": "a", "memory": "m", "user_id": "u", "created_at": "2025-01-01T00:00:00Z"}])

    def link(target: Path):  # type: ignore[no-untyped-def]
        return lambda path: path.symlink_to(target)

    outcome = ingest_bounded(
        tmp_path / "base",
        {
            "mnueron/passwd.csv": link(outside / "passwd.csv"),
            "mnueron/etc.csv": link(Path("/etc/passwd")),
            "mnueron/linked": link(outside / "dir"),
            "mem0/real.json": good.encode(),
            "mem0/alias.json": link(tmp_path / "base" / "landing" / "mem0" / "real.json"),
        },
    )
    assert outcome.counts("mem0/real.json")["accepted"] == 1
    assert outcome.counts("mem0/alias.json")["accepted"] == 1  # a link inside the landing zone is fine
    refused = {k: v for k, v in outcome.dumps.items() if k.startswith("mnueron/")}
    # a linked folder is not walked into; one that leads out is refused like a linked file
    assert set(refused) == {"mnueron/passwd.csv", "mnueron/etc.csv", "mnueron/linked"}
    for dump, found in refused.items():
        error = found.get("error", "")
        assert "ConfigError" in error and "outside the landing zone" in error, (dump, found)
        assert "secret" not in error.lower() and "root:" not in error and str(outside) not in error, error
    assert not any((tmp_path / "base" / "store").rglob("episodes/source_system=mnueron/**/*.parquet"))


def test_discovery_survives_a_symlink_loop(tmp_path: Path) -> None:
    landing = tmp_path / "landing" / "mem0"
    landing.mkdir(parents=True)
    (landing / "a.json").write_text("[]", encoding="utf-8")
    (landing / "loop").symlink_to("..")
    from pipelines.store.ingest import discover_dumps

    assert discover_dumps(Location.from_url(str(tmp_path / "landing")), "mem0") == ["a.json"]


def test_an_export_id_is_never_a_path(tmp_path: Path) -> None:
    exports = Location.from_url(str(tmp_path / "exports"))
    (tmp_path / "manifest.json").write_text("{}", encoding="utf-8")
    for export_id in ("..", "../exports", "/etc", ".hidden"):
        with pytest.raises(ExportNotFoundError):
            lifecycle.get(exports, export_id)


#: Words that name text from a person, a file or the environment: such a value must not be
#: formatted into SQL unless it goes through a quoting helper (or is a bound parameter).
_TAINTED = re.compile(
    r"path|file|uri|url|name|tenant|scope|target|dest|key|label|text|value|query|root|folder|dir",
    re.IGNORECASE,
)
_SQL_HINT = re.compile(r"\b(SELECT|FROM|CREATE|COPY|INSERT|ATTACH|read_\w+\(|FILENAME_PATTERN)\b|read_\w+\(")
_QUOTERS = {"quote_literal", "quote_list", "quote_identifier", "quote"}  # quote: shlex's, for shell
_CONSTANT = re.compile(r"_?[A-Z][A-Z0-9_]*")


def _sql_fstring_problems(source: str, filename: str) -> list[str]:
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.JoinedStr):
            continue
        text = "".join(
            v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
        )
        if not _SQL_HINT.search(text):
            continue
        for part in node.values:
            if not isinstance(part, ast.FormattedValue):
                continue
            expr = part.value
            code = ast.unparse(expr)
            # a call is judged by its function: a quoting helper, or SQL-building code (whose own
            # f-strings this check reads); str/repr/format put the text in as it is, and replace
            # is quoting done by hand
            func = expr.func if isinstance(expr, ast.Call) else None
            called = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            if part.conversion == ord("r") or called in ("repr", "str", "format", "replace"):
                problems.append(f"{filename}:{node.lineno}: {{{code}}} (repr/str/replace is not SQL quoting)")
            elif called or _CONSTANT.fullmatch(code.rsplit(".", 1)[-1]) or code.endswith("_sql"):
                continue
            elif _TAINTED.search(code):
                problems.append(f"{filename}:{node.lineno}: {{{code}}} not through quote_*()")
    return problems


def test_no_sql_is_formatted_from_names_or_paths() -> None:
    """Static: an f-string that reads as SQL formats no path/name/tenant-like value unquoted.

    Heuristic by design (it reads names, not data flow); it caught every case issue 10 listed."""
    root = Path(__file__).resolve().parents[1]
    problems = []
    for package in ("connectors", "pipelines"):
        for path in sorted((root / package).rglob("*.py")):
            problems += _sql_fstring_problems(path.read_text(encoding="utf-8"), str(path.relative_to(root)))
    assert problems == []


def test_the_static_check_catches_the_old_code() -> None:
    old = """
con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({files!r}, hive_partitioning = false)")
_fingerprint(con, f"read_parquet({uris!r}, hive_partitioning = false)")
options = f", FILENAME_PATTERN '{basename}-{{i}}', "
con.execute(f"COPY ({sql}) TO '{target.replace(chr(39), chr(39) * 2)}' ({options})", params)
ok = f"SELECT * FROM read_parquet({quote_list(files)}) WHERE {where}"
"""
    assert len(_sql_fstring_problems(old, "old.py")) == 5


def test_dagster_sensor_and_event_log_with_hostile_dump_names(tmp_path: Path) -> None:
    """Hostile dump names become partitions and ingest; a link out of the landing zone fails its
    partition without its target's content in the event log."""
    import dagster as dg

    from pipelines.orchestration.assets import INGEST_ASSETS
    from pipelines.orchestration.definitions import defs
    from pipelines.orchestration.resources import EpisodeStoreResource, ImportSettings, LandingZone

    landing = tmp_path / "landing"
    (landing / "mem0").mkdir(parents=True)
    (landing / "mnueron").mkdir()
    record = {"id": "a", "memory": NASTY, "user_id": NASTY, "created_at": "2025-01-01T00:00:00Z"}
    hostile = 'it\'s "q"; {i} $(touch pwned).json'
    for name in (hostile, "new\nline.json", "dots...json"):
        (landing / "mem0" / name).write_text(json.dumps([record]), encoding="utf-8")
    (tmp_path / "secret.csv").write_text(f"{SECRET}\n", encoding="utf-8")
    (landing / "mnueron" / "passwd.csv").symlink_to(tmp_path / "secret.csv")
    resources = {
        "landing": LandingZone(url=str(landing)),
        "episode_store": EpisodeStoreResource(
            url=str(tmp_path / "store"), catalog_path=str(tmp_path / "episodes.duckdb")
        ),
        "import_settings": ImportSettings(tenant_id=NASTY),
    }
    instance = dg.DagsterInstance.ephemeral()
    sensor = defs.resolve_sensor_def("landing_sensor")
    result = sensor(dg.build_sensor_context(instance=instance, resources=resources))
    # the three new Mem0 dumps are one run over their partitions' range (sorted: dots, it's, new)
    start, end = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
    assert sorted(
        (r.job_name, r.partition_key, r.tags.get(start), r.tags.get(end)) for r in result.run_requests
    ) == [
        ("ingest_mem0", None, "dots...json", "new\nline.json"),
        ("ingest_mnueron", "passwd.csv", None, None),
    ]
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))

    mem0 = next(a for a in INGEST_ASSETS if a.key.path == ["mem0_episodes"])
    for key in (hostile, "new\nline.json"):
        assert dg.materialize([mem0], resources=resources, instance=instance, partition_key=key).success
    mnueron = next(a for a in INGEST_ASSETS if a.key.path == ["mnueron_episodes"])
    failed = dg.materialize(
        [mnueron], resources=resources, instance=instance, partition_key="passwd.csv", raise_on_error=False
    )
    assert not failed.success
    logged = "\n".join(str(e) for e in instance.all_logs(failed.run_id))
    assert "outside the landing zone" in logged
    assert "secret" not in logged.lower() and "root:" not in logged
