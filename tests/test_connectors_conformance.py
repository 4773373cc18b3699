"""The conformance suite every registered connector gets for free."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fsspec
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from connectors import registry
from connectors.base import Batch, Connector
from connectors.errors import ConfigError, DumpFormatError
from connectors.schema import EPISODE_SCHEMA, REJECT_SCHEMA, REQUIRED_COLUMNS
from tests.conftest import FIXTURES

CONNECTORS = list(registry.CONNECTORS.values())
ids = [c.name for c in CONNECTORS]


def fixture_files(connector: Connector) -> list[Path]:
    """The good fixtures (files beside ``expected.json``; the bad-input corpus is in ``bad/``)."""
    folder = FIXTURES / connector.name
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != "expected.json")


def with_format(fmt: str) -> list[Connector]:
    return [c for c in CONNECTORS if fmt in c.formats]


def read_all(connector: Connector, path: str | Path, **kw: object) -> list[Batch]:
    fs = fsspec.filesystem("file")
    kw.setdefault("tenant_id", "acme")
    return list(connector.read(fs, str(path), **kw))  # type: ignore[arg-type]


def totals(batches: list[Batch]) -> tuple[int, int, int]:
    return (
        sum(b.read for b in batches),
        sum(b.episodes.height for b in batches),
        sum(b.rejects.height for b in batches),
    )


def test_registry_names_match_connectors() -> None:
    assert all(name == c.name for name, c in registry.CONNECTORS.items())
    with pytest.raises(ConfigError, match="no connector for system 'nope'"):
        registry.get("nope")


@pytest.mark.parametrize("connector", CONNECTORS, ids=ids)
def test_schema_and_accounting_on_every_fixture(connector: Connector) -> None:
    files = fixture_files(connector)
    assert files, f"{connector.name} has no fixtures"
    for path in files:
        batches = read_all(connector, path)
        read, accepted, rejected = totals(batches)
        assert read == accepted + rejected > 0, path
        for b in batches:
            assert b.episodes.schema == EPISODE_SCHEMA
            assert b.rejects.schema == REJECT_SCHEMA
            nulls = b.episodes.select(pl.col(c).null_count() for c in REQUIRED_COLUMNS).row(0)
            assert nulls == (0,) * len(REQUIRED_COLUMNS), dict(zip(REQUIRED_COLUMNS, nulls, strict=True))


@pytest.mark.parametrize("connector", CONNECTORS, ids=ids)
def test_deterministic(connector: Connector) -> None:
    for path in fixture_files(connector):
        first = pl.concat([b.episodes for b in read_all(connector, path)]).drop("ingested_at")
        again = pl.concat([b.episodes for b in read_all(connector, path)]).drop("ingested_at")
        assert_frame_equal(first, again)


@pytest.mark.parametrize("connector", CONNECTORS, ids=ids)
@pytest.mark.parametrize("content", [b"", b"\n  \n", b"\xef\xbb\xbf"], ids=["empty", "blank", "bom"])
def test_empty_dump(connector: Connector, tmp_path: Path, content: bytes) -> None:
    dump = tmp_path / "empty.jsonl"
    dump.write_bytes(content)
    assert totals(read_all(connector, dump)) == (0, 0, 0)


@pytest.mark.parametrize("connector", with_format("jsonl"), ids=lambda c: c.name)
def test_corrupt_lines_become_rejects(connector: Connector, tmp_path: Path) -> None:
    dump = tmp_path / "corrupt.jsonl"
    dump.write_bytes(b'{"a": \nnot json at all\n\xff\xfe\x00 binary\n[1, 2, 3]\n"just a string"\n')
    batches = read_all(connector, dump)
    read, accepted, rejected = totals(batches)
    assert (read, accepted, rejected) == (5, 0, 5)
    rejects = pl.concat([b.rejects for b in batches])
    assert rejects["dump_record"].to_list() == [0, 1, 2, 3, 4]
    assert rejects["reason"].cast(pl.String).to_list() == [
        "invalid_json",
        "invalid_json",
        "invalid_utf8",
        "not_an_object",
        "not_an_object",
    ]
    assert rejects["raw"].null_count() == 0


@pytest.mark.parametrize("connector", with_format("json"), ids=lambda c: c.name)
def test_truncated_json_keeps_what_was_read(connector: Connector, tmp_path: Path) -> None:
    """Every JSON fixture cut short: no crash, nothing lost, and the break is a reject."""
    documents = [p for p in fixture_files(connector) if p.suffix in (".json", ".af")]
    assert documents, f"{connector.name} reads JSON but has no JSON fixture"
    for path in documents:
        text = path.read_text(encoding="utf-8")
        dump = tmp_path / path.name
        dump.write_text(text[: text.rindex("}") - 3], encoding="utf-8")  # cut inside the last record
        batches = read_all(connector, dump, scope_template=connector.default_scope_template)
        read, accepted, rejected = totals(batches)
        assert read == accepted + rejected, path.name
        reasons = pl.concat([b.rejects for b in batches])["reason"].cast(pl.String).to_list()
        if path.suffix == ".af":  # an agent file is parsed whole: its one reject is the truncation
            assert "truncated_document" in reasons, (path.name, reasons)
            continue
        # The truth: the document is cut short, and the bytes of the record it ends in are unread.
        assert "truncated_document" in reasons, (path.name, reasons)
        # A streamed document says where it stopped (a document read whole is the one reject).
        assert any(b.unread for b in batches) or read == 1, path.name


@pytest.mark.parametrize("connector", CONNECTORS, ids=ids)
def test_batches_are_bounded(connector: Connector) -> None:
    for path in fixture_files(connector):
        batches = read_all(connector, path, batch_rows=2)
        assert all(b.read <= 2 for b in batches)
        assert sum(b.read for b in batches) == totals(read_all(connector, path))[0]


@pytest.mark.parametrize("connector", CONNECTORS, ids=ids)
def test_unknown_scope_placeholder_fails_before_reading(connector: Connector) -> None:
    with pytest.raises(ConfigError, match=r"\{nope\}"):
        read_all(connector, "/does/not/exist", scope_template="org:{nope}")


@pytest.mark.parametrize("connector", CONNECTORS, ids=ids)
def test_foreign_json_object_is_a_format_error(connector: Connector, tmp_path: Path) -> None:
    dump = tmp_path / "other.json"
    dump.write_text(json.dumps({"orders": [{"id": 1}], "customers": []}, indent=2), encoding="utf-8")
    with pytest.raises(DumpFormatError, match=r"other\.json: not a .*orders"):
        read_all(connector, dump)


@pytest.mark.parametrize("connector", CONNECTORS, ids=ids)
def test_connector_does_not_import_dagster(connector: Connector) -> None:
    code = (
        f"import sys, connectors.registry, connectors.{connector.name}; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
