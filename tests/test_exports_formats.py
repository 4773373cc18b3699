"""Export formats: round trips, CSV read back two ways, hostile Markdown, compression, parts, S3."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from markdown_it import MarkdownIt

from pipelines.exports import lifecycle
from pipelines.exports.formats import CSV_HEADER, MNUERON_HEADER, unneutralize
from pipelines.exports.reimport import import_export
from pipelines.exports.request import ExportRequest
from pipelines.store.episodes import EpisodeStore
from pipelines.store.ingest import ingest_dump
from pipelines.store.locations import Location
from tests.conftest import put
from tests.export_fixtures import EPISODES, build_store

EVERYTHING = {"tenant_id": "*", "include_superseded": True, "include_deleted": True}


@pytest.fixture(scope="module")
def hand_store(tmp_path_factory: pytest.TempPathFactory) -> EpisodeStore:
    return build_store(EpisodeStore.from_url(str(tmp_path_factory.mktemp("hand") / "store")))


def run(store: EpisodeStore, exports: Location, **fields: Any) -> dict[str, Any]:
    manifest = lifecycle.export(store, exports, ExportRequest.parse(EVERYTHING | fields))
    assert manifest["status"] == "READY", manifest["error"]
    return manifest


def file_bytes(manifest: dict[str, Any]) -> list[bytes]:
    dest = Location.from_url(manifest["destination"])
    return [dest.fs.cat_file(dest.path(f["name"])) for f in manifest["files"]]


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_round_trip_store_export_import_export_is_identical(
    fmt: str, hand_store: EpisodeStore, tmp_path: Path
) -> None:
    exports = Location.from_url(str(tmp_path / "exports"))
    first = run(hand_store, exports, format=fmt)
    assert first["rows"] == 10  # the current version of every episode, of every tenant and status
    second_store = EpisodeStore.from_url(str(tmp_path / "store2"))
    (result,) = import_export(second_store, first)
    assert result.counts == {"read": 10, "accepted": 10, "rejected": 0, "duplicate": 0}
    second = run(second_store, exports, format=fmt)
    assert rows_of(fmt, file_bytes(second)[0]) == rows_of(fmt, file_bytes(first)[0])
    assert second["files"][0]["bytes"] == first["files"][0]["bytes"]


def rows_of(fmt: str, data: bytes) -> list[str]:
    """The export's rows, byte for byte, in a fixed order (exports stream in no particular order)."""
    if fmt == "json":
        body = data.decode().strip().removeprefix("[").removesuffix("]")
        return sorted(line.strip().rstrip(",") for line in body.splitlines() if line.strip())
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
        return [",".join(rows[0]), *sorted("\x1f".join(r) for r in rows[1:])]
    return sorted(data.decode().splitlines())


def test_cortexdb_profile_round_trips_through_the_cortexdb_connector(
    hand_store: EpisodeStore, tmp_path: Path
) -> None:
    exports = Location.from_url(str(tmp_path / "exports"))
    first = run(hand_store, exports, format="ndjson", profile="cortexdb", tenant_id="acme")
    (envelope_bytes,) = file_bytes(first)
    line = json.loads(envelope_bytes.splitlines()[0])
    assert set(line) >= {"modality", "content", "context", "idempotency_key", "scope"}
    assert line["content"]["kind"] == "message" and "observed_at" in line["context"]
    landing = Location.from_url(str(tmp_path / "landing"))
    put(landing, "cortexdb/export.jsonl", envelope_bytes)
    second_store = EpisodeStore.from_url(str(tmp_path / "store2"))
    result = ingest_dump(second_store, landing, "cortexdb", "export.jsonl", tenant_id="acme")
    assert result.counts["accepted"] == first["rows"] and result.counts["rejected"] == 0
    second = run(second_store, exports, format="ndjson", profile="cortexdb", tenant_id="acme")
    assert rows_of("ndjson", file_bytes(second)[0]) == rows_of("ndjson", envelope_bytes)


def test_mnueron_profile_has_the_mnueron_header(hand_store: EpisodeStore, tmp_path: Path) -> None:
    m = run(hand_store, Location.from_url(str(tmp_path)), format="csv", profile="mnueron", tenant_id="acme")
    rows = list(csv.reader(io.StringIO(file_bytes(m)[0].decode())))
    assert tuple(rows[0]) == MNUERON_HEADER
    assert all(r[6].isdigit() for r in rows[1:])  # created_at in epoch ms


def test_csv_reads_back_the_same_with_python_csv_and_duckdb(hand_store: EpisodeStore, tmp_path: Path) -> None:
    m = run(hand_store, Location.from_url(str(tmp_path)), format="csv")
    raw = file_bytes(m)[0]
    assert b"\r\n" in raw  # RFC 4180 line breaks
    with open(m["files"][0]["url"], newline="", encoding="utf-8") as f:
        py_rows = list(csv.reader(f))
    assert tuple(py_rows[0]) == CSV_HEADER
    body = py_rows[1:]
    with duckdb.connect() as con:
        cols = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in CSV_HEADER) + "}"
        db_rows = con.sql(
            f"SELECT * FROM read_csv('{m['files'][0]['url']}', header = true, columns = {cols}, "
            "quote = '\"', escape = '\"', auto_detect = false)"
        ).fetchall()
    assert [[v if v is not None else "" for v in r] for r in db_rows] == body
    content = {r[CSV_HEADER.index("idempotency_key")]: r[CSV_HEADER.index("content")] for r in body}
    originals = {f"test:{s['key']}": s["content"] for p in ("a", "b") for s in EPISODES[p]}
    # formula-like text is neutralized, and the inverse gives back the exact original
    assert content["test:k1"].startswith("'=") and content["test:k2"].startswith("'+")
    assert content["test:k4"].startswith("''")
    assert {k: unneutralize(v) for k, v in content.items()} == {k: originals[k] for k in content}
    assert not any(v[0] in "=+-@" for row in body for v in row if v)


def test_csv_neutralization_can_be_turned_off(hand_store: EpisodeStore, tmp_path: Path) -> None:
    m = run(hand_store, Location.from_url(str(tmp_path)), format="csv", neutralize_formulas=False)
    rows = list(csv.DictReader(io.StringIO(file_bytes(m)[0].decode(), newline="")))
    assert {r["content"] for r in rows if r["idempotency_key"] == "test:k1"} == {EPISODES["a"][0]["content"]}


def test_markdown_with_hostile_content_stays_well_formed(hand_store: EpisodeStore, tmp_path: Path) -> None:
    m = run(hand_store, Location.from_url(str(tmp_path)), format="markdown", name="hostile")
    text = file_bytes(m)[0].decode()
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    fences = [t for t in tokens if t.type == "fence"]
    assert len(fences) == m["rows"] == 10
    current = [s for s in EPISODES["a"] if s["key"] != "k8"] + EPISODES["b"]
    originals = sorted(s["content"] for s in current)
    # every content comes back exactly from its fence (CommonMark turns CR LF into LF)
    assert sorted(t.content.removesuffix("\n") for t in fences) == sorted(
        o.replace("\r\n", "\n") for o in originals
    )
    assert not [t for t in tokens if t.type in ("html_block", "html_inline", "table_open")]
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings[0] == "memport export hostile"
    assert sum(h.startswith("Scope ") for h in headings) == 6  # 5 scopes of acme, 1 of globex
    assert sum(t.tag == "h4" for t in tokens if t.type == "heading_open") == 10
    assert "**10 episodes**" in text


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
@pytest.mark.parametrize("fmt", ["ndjson", "csv", "json"])
def test_compression(fmt: str, compression: str, hand_store: EpisodeStore, tmp_path: Path) -> None:
    plain = run(hand_store, Location.from_url(str(tmp_path / "p")), format=fmt)
    packed = run(hand_store, Location.from_url(str(tmp_path / "c")), format=fmt, compression=compression)
    (name,) = [f["name"] for f in packed["files"]]
    assert name.endswith({"gzip": ".gz", "zstd": ".zst"}[compression])
    with duckdb.connect() as con:  # DuckDB reads its own compressed output back
        reader = "read_csv" if fmt == "csv" else "read_json"
        (n,) = con.sql(f"SELECT count(*) FROM {reader}('{packed['files'][0]['url']}')").fetchall()[0]
    assert n == plain["rows"] == packed["rows"]
    if compression == "gzip":
        assert rows_of(fmt, gzip.decompress(file_bytes(packed)[0])) == rows_of(fmt, file_bytes(plain)[0])


def test_markdown_gzip(hand_store: EpisodeStore, tmp_path: Path) -> None:
    plain = run(hand_store, Location.from_url(str(tmp_path / "p")), format="markdown")
    packed = run(hand_store, Location.from_url(str(tmp_path / "c")), format="markdown", compression="gzip")
    body = gzip.decompress(file_bytes(packed)[0]).decode()
    assert body.split("\n", 3)[3] == file_bytes(plain)[0].decode().split("\n", 3)[3]  # after the date line


def big_store(tmp_path: Path, n: int) -> EpisodeStore:
    """n episodes with ~1 KB of content each, written straight from DuckDB."""
    import polars as pl

    from connectors.base import Batch
    from connectors.schema import EPISODE_SCHEMA, REJECT_SCHEMA
    from pipelines.store.episodes import DumpInfo

    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows = pl.DataFrame(
        {
            "episode_id": [f"ep_{i:06d}" for i in range(n)],
            "idempotency_key": [f"big:{i}" for i in range(n)],
            "tenant_id": "acme",
            "scope": [f"org:acme/user:{i % 7}" for i in range(n)],
            "type": "message",
            "content": [f"row {i} " + "x" * 1000 for i in range(n)],
            "source_system": "mem0",
            "source_id": [str(i) for i in range(n)],
            "session_id": [f"s{i % 3}" for i in range(n)],
            "status": "active",
            "categories": [[]] * n,
            "tags": [[]] * n,
            "metadata": "{}",
            "observed_at": [start + timedelta(seconds=i) for i in range(n)],
            "content_sha256": "0",
            "dump_uri": "memory://x",
            "dump_record": list(range(n)),
            "ingested_at": start,
        }
    )
    frame = rows.select(
        [pl.col(c) if c in rows.columns else pl.lit(None).alias(c) for c in EPISODE_SCHEMA.names()]
    ).cast(EPISODE_SCHEMA)
    store = EpisodeStore.from_url(str(tmp_path / "big"))
    dump_path = put(store.location, "_dumps/big.json", "[]")
    info = DumpInfo(store.location.uri(dump_path), "test", "big", "0", "acme", "{scope}")
    store.ingest(info, [Batch(frame, REJECT_SCHEMA.to_frame(), n)], dump_fs=store.location.fs)
    return store


@pytest.mark.parametrize("fmt", ["ndjson", "json", "csv", "markdown"])
def test_part_splitting(fmt: str, tmp_path: Path) -> None:
    store = big_store(tmp_path, 3000)
    m = run(store, Location.from_url(str(tmp_path / "exports")), format=fmt, max_part_bytes=1 << 20)
    names = [f["name"] for f in m["files"]]
    assert len(names) >= 2, names
    assert names == sorted(names, key=lambda s: int(s.split("-")[-1].split(".")[0]))
    total = 0
    for data in file_bytes(m):
        if fmt == "ndjson":
            total += len(data.splitlines())
        elif fmt == "json":
            total += len(json.loads(data))  # every part is a whole JSON array
        elif fmt == "csv":
            rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
            assert tuple(rows[0]) == CSV_HEADER  # every part has the header
            total += len(rows) - 1
        else:
            assert data.startswith(b"# memport export")
            total += data.count(b"\n#### ")
    assert total == m["rows"] == 3000


def test_export_to_the_s3_test_server(hand_store: EpisodeStore, s3_endpoint: str, tmp_path: Path) -> None:
    exports = Location.from_url(f"s3://memport-test/{tmp_path.name}/exports")
    for fmt in ("ndjson", "csv", "markdown"):
        m = run(hand_store, exports, format=fmt, compression="gzip", tenant_id="acme")
        assert m["destination"].startswith("s3://memport-test/")
        assert lifecycle.ready(exports, m["id"])["rows"] == 9
        (data,) = file_bytes(m)
        assert len(data) == m["files"][0]["bytes"]
    # and from a store on S3 too, to a destination of the caller's choice
    s3_store = build_store(EpisodeStore.from_url(f"s3://memport-test/{tmp_path.name}/store"))
    m = run(
        s3_store,
        exports,
        format="json",
        tenant_id="acme",
        destination=f"s3://memport-test/{tmp_path.name}/out",
    )
    (data,) = file_bytes(m)
    assert len(json.loads(data)) == 9
    assert m["files"][0]["name"] == f"episodes-{m['id']}.json"
