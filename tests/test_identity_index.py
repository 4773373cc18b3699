"""The identity index (``pipelines.store.identity_index``): a lookup finds exactly the rows a scan
of the segment would, including an identity whose rows span several blocks, and only reads blocks."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

from connectors.errors import StoreError
from connectors.kit.sql import duckdb_connect, quote_literal
from pipelines.store import identity_index


def test_lookup_finds_exactly_what_a_scan_finds(tmp_path: Path) -> None:
    seg = tmp_path / "seg.parquet"
    con = duckdb_connect()
    # 3,000 rows in a random order; hash 7 has 600 rows (spans three blocks of 256), others one or two
    con.execute(
        "COPY (SELECT CASE WHEN i % 5 = 0 THEN 7 ELSE hash(i // 2) END::UBIGINT AS _identity_hash, "
        f"'imp-' || (i % 13) AS _ingest_id FROM range(3000) t(i) ORDER BY hash(i * 31)) "
        f"TO {quote_literal(str(seg))}"
    )
    idx = tmp_path / "idx.bin"
    idx.write_bytes(identity_index.build(con, str(seg)))
    fs = fsspec.filesystem("file")
    keys = [0, 7, *(h for (h,) in con.sql("SELECT hash(i) FROM range(0, 1500, 97) t(i)").fetchall()), 12345]
    want = con.sql(
        f"SELECT _identity_hash, file_row_number, _ingest_id FROM read_parquet({quote_literal(str(seg))}, "
        "file_row_number = true) WHERE _identity_hash IN (SELECT unnest(?::UBIGINT[]))",
        params=[keys],
    ).fetchall()
    got = identity_index.lookup(fs, str(idx), keys)
    assert sorted(got) == sorted(want) and len([g for g in got if g[0] == 7]) == 600
    assert identity_index.lookup(fs, str(idx), []) == []
    assert identity_index.lookup(fs, str(idx), [1, 2, 3]) == []  # none of these hashes


def test_a_file_that_is_not_an_index_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "idx.bin"
    bad.write_bytes(b"PAR1 not an index")
    with pytest.raises(StoreError, match="not a memport identity index"):
        identity_index.lookup(fsspec.filesystem("file"), str(bad), [1])
