"""A segment's identity index: where each identity's rows are, found at the cost of the keys looked up.

Written beside a segment of ``episodes``, ``log`` or ``asof`` when the segment is written, and as
immutable. A refresh looks up the identities a new dump touches (a few hundred hashes) in every
segment; scanning a large segment's ``_identity_hash`` column costs the segment (measured at 10M
episodes: 0.27-0.46 s of a 0.8 s refresh), a sorted Parquet index the footer of its many row
groups (DuckDB prunes ``h IN (<500 literals>)`` to 471 of 4,883 row groups of 2,048 rows, yet
spends 158 ms CPU on 10M rows, 118 ms with 8,192-row groups: no gain worth a file). This index is
a plain sorted array in blocks of ``BLOCK`` entries with a fence (each block's first hash), so a
lookup reads the header, the fence (8 bytes per block) and one contiguous range per block that can
hold a key: a few MB at 10M rows, whatever the segment's size.

Layout (little-endian)::

    header   MAGIC, entries, BLOCK, blocks, length of the ingest-id table   (5 x 8 bytes)
    fence    blocks x uint64                         the first hash of each block
    ingests  JSON list of the segment's distinct ``_ingest_id`` values
    blocks   per block: hashes (uint64), rows (uint64), ingest codes (uint32), n entries each

Entries are sorted by (hash, row); an identity with several rows (the log) may span blocks.
"""

from __future__ import annotations

import bisect
import json
import struct
import sys
from array import array
from collections.abc import Iterable

import duckdb
import polars as pl
from fsspec import AbstractFileSystem

from connectors.errors import StoreError
from connectors.kit.sql import quote_literal

MAGIC = b"MPIDX001"
BLOCK = 256
_HEADER = struct.Struct("<8sQQQQ")


def _raw(series: pl.Series, width: int) -> bytes:
    """The little-endian bytes of a null-free numeric series (Arrow's buffer, no copy per value)."""
    arr = series.rechunk().to_arrow()
    buf = arr.buffers()[1]
    assert buf is not None
    return bytes(memoryview(buf)[arr.offset * width : (arr.offset + len(arr)) * width])


def build(con: duckdb.DuckDBPyConnection, segment_uri: str) -> bytes:
    """The index of the segment at ``segment_uri`` (read back from the written file: the rows are
    its rows, whatever order the writer kept)."""
    assert sys.byteorder == "little"
    frame = con.sql(
        "SELECT _identity_hash AS h, file_row_number::UBIGINT AS r, _ingest_id AS i "
        f"FROM read_parquet({quote_literal(segment_uri)}, file_row_number = true) ORDER BY h, r"
    ).pl()
    ingests = frame["i"].unique().sort().to_list()
    codes = frame["i"].cast(pl.Enum(ingests)).to_physical().cast(pl.UInt32)
    hashes, rows, n = _raw(frame["h"], 8), _raw(frame["r"], 8), frame.height
    blocks = (n + BLOCK - 1) // BLOCK
    table = json.dumps(ingests).encode()
    parts = [
        _HEADER.pack(MAGIC, n, BLOCK, blocks, len(table)),
        _raw(frame["h"].gather_every(BLOCK), 8),
        table,
    ]
    code_bytes = _raw(codes, 4)
    for b in range(blocks):
        lo, hi = b * BLOCK, min(n, (b + 1) * BLOCK)
        parts += [hashes[lo * 8 : hi * 8], rows[lo * 8 : hi * 8], code_bytes[lo * 4 : hi * 4]]
    return b"".join(parts)


def lookup(fs: AbstractFileSystem, path: str, keys: Iterable[int]) -> list[tuple[int, int, str]]:
    """(hash, row, ingest id) of every entry of the index at ``path`` whose hash is in ``keys``."""
    wanted = sorted(set(keys))
    if not wanted:
        return []
    with fs.open(path, "rb") as f:
        head = f.read(_HEADER.size)
        magic, n, block, blocks, table_len = _HEADER.unpack(head) if len(head) == _HEADER.size else (b"",) * 5
        if magic != MAGIC:
            raise StoreError(f"{path} is not a memport identity index; run the refresh with rebuild")
        fence = array("Q")
        fence.frombytes(f.read(blocks * 8))
        ingests: list[str] = json.loads(f.read(table_len))
        start = _HEADER.size + blocks * 8 + table_len
        need = sorted(
            {
                b
                for k in wanted
                for b in range(max(bisect.bisect_left(fence, k) - 1, 0), bisect.bisect_right(fence, k))
            }
        )
        found = []
        for b in need:
            size = min(block, n - b * block)
            f.seek(start + b * block * 20)
            raw = f.read(size * 20)
            hashes, rows, codes = array("Q"), array("Q"), array("I")
            hashes.frombytes(raw[: size * 8])
            rows.frombytes(raw[size * 8 : size * 16])
            codes.frombytes(raw[size * 16 :])
            lo = bisect.bisect_left(wanted, fence[b])
            hi = bisect.bisect_right(wanted, fence[b + 1]) if b + 1 < blocks else len(wanted)
            for k in wanted[lo:hi]:
                for j in range(bisect.bisect_left(hashes, k), bisect.bisect_right(hashes, k)):
                    found.append((k, rows[j], ingests[codes[j]]))
        return found
