"""Hostile containers and tables, each ingested in a bounded child process (``tests.hostile``).

Compression inside archives (a gzip inside a zip that inflates to one endless line), zip entries
that lie about their size or are corrupt, CSV headers of a million columns, a CSV cell, a
Markdown line or a SQLite value of hundreds of megabytes, and Markdown lines built to make a regex
backtrack. Each
must stay under 1 GiB, finish in seconds and be accounted for (rejects, or a partition failure
naming the file and the reason), while a good dump beside it in the same landing zone imports.
The files are generated on the fly; the large ones are written in chunks, never held whole.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from tests.hostile import GIB, Outcome, ingest_bounded

MIB = 1 << 20
BOUND = GIB


def memory(i: int, **extra: object) -> dict[str, object]:
    return {
        "id": f"m-{i}",
        "content": f"memory {i}",
        "user_id": "u1",
        "created_at": "2025-01-01T00:00:00Z",
        "state": "active",
        **extra,
    }


GOOD_MEM0 = json.dumps([memory(100 + i) for i in range(3)]).encode()


def deflate_repeating(chunk: bytes, times: int) -> tuple[bytes, int]:
    """Raw deflate data of ``chunk * times`` and its CRC-32, without compressing every copy:
    after a full flush the compressor forgets its history, so each copy compresses the same."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(times):
        crc = zlib.crc32(chunk, crc)
    return block * times, crc


def gzip_of(pieces: list[tuple[bytes, int]]) -> bytes:
    """A gzip member of the concatenation of ``chunk * times`` for each piece (CRC and size right)."""
    body, crc, size = [], 0, 0
    for chunk, times in pieces:
        data, _ = deflate_repeating(chunk, times)
        body.append(data)
        for _ in range(times):
            crc = zlib.crc32(chunk, crc)
        size += len(chunk) * times
    tail = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)  # an empty final block
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + b"".join(body) + tail + struct.pack("<II", crc, size & 0xFFFFFFFF)


def lines_of(*records: dict[str, object]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def backup_zip(entries: dict[str, bytes], *, method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def gz_line_bomb(line_bytes: int) -> bytes:
    """An OpenMemory backup zip whose ``memories.jsonl.gz`` holds 3 good memories, then one line
    of ``line_bytes`` (a JSON memory whose content is that many ``a``), then 2 more."""
    head = lines_of(*(memory(i) for i in range(3))) + b'{"id": "big", "user_id": "u1", "content": "'
    tail = b'"}\n' + lines_of(memory(3), memory(4))
    gz = gzip_of([(head, 1), (b"a" * MIB, line_bytes // MIB), (tail, 1)])
    return backup_zip({"memories.jsonl.gz": gz})


def gz_long_line(line_bytes: int) -> bytes:
    """Not a bomb (random hex compresses about 2:1), just one memory line far over any record
    size, between good lines."""
    big = memory(99, content=os.urandom(line_bytes // 2).hex())
    data = lines_of(memory(0), memory(1), big, memory(2))
    import gzip

    return backup_zip({"memories.jsonl.gz": gzip.compress(data, 1)})


def lying_zip(entries: dict[str, bytes], liar: str, *, declared: int) -> bytes:
    """A deflated zip whose central directory says entry ``liar`` holds ``declared`` bytes."""
    data = bytearray(backup_zip(entries, method=zipfile.ZIP_DEFLATED))
    name = liar.encode()
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46 : at + 46 + name_len]) == name:
            struct.pack_into("<I", data, at + 24, declared)
        at = data.find(b"PK\x01\x02", at + 4)
    return bytes(data)


def corrupt_zip(entries: dict[str, bytes], victim: str) -> bytes:
    """A deflated zip whose entry ``victim`` has bytes flipped in the middle of its data."""
    data = bytearray(backup_zip(entries, method=zipfile.ZIP_DEFLATED))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo(victim)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + info.compress_size // 3, start + info.compress_size // 3 + 64):
        data[i] ^= 0x5A
    return bytes(data)


def conversation(cid: str, text: str) -> dict[str, object]:
    return {
        "id": cid,
        "title": cid,
        "create_time": 1_700_000_000.0,
        "current_node": "n1",
        "mapping": {
            "n0": {"id": "n0", "message": None, "parent": None, "children": ["n1"]},
            "n1": {
                "id": "n1",
                "parent": "n0",
                "children": [],
                "message": {
                    "id": "n1",
                    "author": {"role": "user"},
                    "create_time": 1_700_000_000.0,
                    "content": {"content_type": "text", "parts": [text]},
                },
            },
        },
    }


def shard(prefix: str, n: int) -> bytes:
    return json.dumps([conversation(f"{prefix}-{i}", "hello " * 2000) for i in range(n)]).encode()


def csv_header(extra: int) -> bytes:
    return ",".join(["id", "content", "namespace", "tags", "created_at"] + [f"col{i}" for i in range(extra)])


def wide_csv(extra: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with path.open("wb") as f:
            f.write(csv_header(extra).encode() + b"\n")
            f.write(b"r1,hello,ns,a," + b"1716990000000" + b"," * extra + b"\n")

    return write


GOOD_CSV = (
    b"id,content,namespace,tags,created_at\nr1,hello,ns,a;b,1716990000000\nr2,world,ns,,1716990000000\n"
)


def csv_with_huge_cell(cell_bytes: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with path.open("wb") as f:
            f.write(b"id,content,namespace,tags,created_at\nr1,hello,ns,a,1716990000000\nr2,")
            for _ in range(cell_bytes // MIB):
                f.write(b"x" * MIB)
            f.write(b",ns,a,1716990000000\nr3,after,ns,a,1716990000000\n")

    return write


MD_ENTRY = "## mem_{i}\n- **user_id:** u1\n- **created_at:** 2025-06-01T12:00:00Z\n\nmemory {i}\n\n"


def markdown_with_long_line(line_bytes: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with path.open("wb") as f:
            f.write(b"# Memsolus export\n\n" + MD_ENTRY.format(i=0).encode())
            f.write(b"## mem_big\n- **user_id:** u1\n- **created_at:** 2025-06-01T12:00:00Z\n\n")
            for _ in range(line_bytes // MIB):
                f.write(b"y" * MIB)
            f.write(b"\n\n" + MD_ENTRY.format(i=2).encode())

    return write


def markdown_backtracking(spaces: int) -> bytes:
    """Lines a lazy ``(.*?)\\s*`` full match backtracks on quadratically: runs of spaces."""
    heading = (
        "## mem_1" + " " * spaces + "x\n- **user_id:** u1\n- **created_at:** 2025-06-01T12:00:00Z\n\nm\n\n"
    )
    field = (
        "## mem_2\n- **user_id:** u1" + " " * spaces + "x\n- **created_at:** 2025-06-01T12:00:00Z\n\nm\n\n"
    )
    return ("# Memsolus export\n\n" + MD_ENTRY.format(i=0) + heading + field + MD_ENTRY.format(i=3)).encode()


def run(tmp_path: Path, files: dict[str, bytes | Callable[[Path], None]], **kw: object) -> Outcome:
    outcome = ingest_bounded(tmp_path, files, timeout=90.0, **kw)  # type: ignore[arg-type]
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "seconds"} for k, v in outcome.dumps.items()}
    print(
        f"\npeak {outcome.peak / MIB:.0f} MiB, wall {outcome.wall:.1f} s, killed={outcome.killed}: {summary}"
    )
    assert not outcome.killed, f"killed at {outcome.peak / MIB:.0f} MiB: {outcome.stderr[-1500:]}"
    assert outcome.peak < BOUND, f"peak {outcome.peak / MIB:.0f} MiB"
    assert outcome.wall < 30, f"{outcome.wall:.1f} s"
    return outcome


def details(tmp_path: Path, dump: str) -> list[str]:
    """The reject details the child wrote to the store for ``<system>/<file>``."""
    system, name = dump.split("/", 1)
    parts = tmp_path / "store" / "rejects" / f"source_system={system}" / f"dump={name}"
    frame = pl.read_parquet(sorted(parts.glob("*.parquet")))
    return frame.sort("dump_record")["detail"].to_list()


def good_mem0_ingested(outcome: Outcome) -> None:
    assert outcome.counts("mem0/good.json")["accepted"] == 3


# --- compression inside archives -----------------------------------------------------------------


def test_gzip_in_zip_inflating_to_one_endless_line_is_an_unsafe_entry(tmp_path: Path) -> None:
    outcome = run(tmp_path, {"mem0/backup.zip": gz_line_bomb(256 * MIB), "mem0/good.json": GOOD_MEM0})
    counts = outcome.counts("mem0/backup.zip")
    assert (counts["accepted"], counts["rejected"]) == (3, 1), counts
    assert outcome.dumps["mem0/backup.zip"]["reasons"] == {"unsafe_archive_entry": 1}
    (detail,) = details(tmp_path, "mem0/backup.zip")
    assert re.fullmatch(
        r"memories\.jsonl\.gz after line 3: memories\.jsonl\.gz \(gzip\) inflates [\d,]+ bytes of the "
        r"file to more than [\d,]+ \(ratio above 200\): a decompression bomb; rest not read",
        detail,
    ), detail
    good_mem0_ingested(outcome)


def test_one_oversized_line_in_a_gzip_in_a_zip_costs_that_line_only(tmp_path: Path) -> None:
    outcome = run(tmp_path, {"mem0/backup.zip": gz_long_line(24 * MIB), "mem0/good.json": GOOD_MEM0})
    counts = outcome.counts("mem0/backup.zip")
    assert (counts["accepted"], counts["rejected"]) == (3, 1), counts
    assert outcome.dumps["mem0/backup.zip"]["reasons"] == {"payload_too_large": 1}
    (detail,) = details(tmp_path, "mem0/backup.zip")
    assert re.fullmatch(
        r"memories\.jsonl\.gz line 3 is [\d,]+ bytes; one record may hold 8,388,608; line skipped", detail
    ), detail
    good_mem0_ingested(outcome)


# --- zip entries that lie about their size, or are corrupt --------------------------------------


def test_zip_entry_smaller_in_the_directory_than_its_data(tmp_path: Path) -> None:
    entries = {"conversations-000.json": shard("a", 3), "conversations-001.json": shard("b", 40)}
    entries["conversations-002.json"] = shard("c", 2)
    data = lying_zip(entries, "conversations-001.json", declared=20_000)
    outcome = run(tmp_path, {"openai/export.zip": data, "mem0/good.json": GOOD_MEM0})
    counts = outcome.counts("openai/export.zip")
    assert counts["accepted"] == 5, counts
    reasons = outcome.dumps["openai/export.zip"]["reasons"]
    assert reasons.get("malformed_document") == 1, reasons
    (detail,) = [d for d in details(tmp_path, "openai/export.zip") if "broken" in d]
    assert re.fullmatch(
        r"entry 'conversations-001\.json' is broken after [\d,]+ bytes \(Bad CRC-32 for file "
        r"'conversations-001\.json'\): corrupt, or its data does not match the size its archive declares; "
        r"the rest of the entry is not read",
        detail,
    ), detail
    good_mem0_ingested(outcome)


def test_mem0_backup_entry_lying_about_its_size(tmp_path: Path) -> None:
    data = lines_of(*(memory(i) for i in range(2000)))
    import gzip

    zipped = lying_zip({"memories.jsonl.gz": gzip.compress(data)}, "memories.jsonl.gz", declared=5_000)
    outcome = run(tmp_path, {"mem0/backup.zip": zipped, "mem0/good.json": GOOD_MEM0})
    assert outcome.dumps["mem0/backup.zip"]["reasons"] == {"malformed_document": 1}
    good_mem0_ingested(outcome)


def test_corrupt_zip_entries_are_one_reject_each(tmp_path: Path) -> None:
    entries = {"conversations-000.json": shard("a", 3), "conversations-001.json": shard("b", 40)}
    entries["conversations-002.json"] = shard("c", 2)
    snapshot = {"user": {"user_id": "u1"}, "memories": [memory(i) for i in range(2000)]}
    outcome = run(
        tmp_path,
        {
            "openai/export.zip": corrupt_zip(entries, "conversations-001.json"),
            "mem0/backup.zip": corrupt_zip({"memories.json": json.dumps(snapshot).encode()}, "memories.json"),
            "mem0/good.json": GOOD_MEM0,
        },
    )
    assert outcome.counts("openai/export.zip")["accepted"] >= 5
    assert outcome.dumps["openai/export.zip"]["reasons"].get("malformed_document") == 1
    assert outcome.dumps["mem0/backup.zip"]["reasons"] == {"malformed_document": 1}
    good_mem0_ingested(outcome)


def test_zip_entry_whose_local_header_is_broken(tmp_path: Path) -> None:
    def broken(name: str, payload: bytes) -> bytes:
        data = bytearray(backup_zip({"README.txt": b"read me", name: payload}))
        at = data.find(b"PK\x03\x04", 4)  # the second entry's local header loses its signature
        data[at : at + 4] = b"PK\x03\x05"
        return bytes(data)

    outcome = run(
        tmp_path,
        {
            "mem0/backup.zip": broken("memories.json", json.dumps([memory(1)]).encode()),
            "openai/export.zip": broken("conversations.json", shard("a", 2)),
            "mem0/good.json": GOOD_MEM0,
        },
    )
    for dump in ("mem0/backup.zip", "openai/export.zip"):
        assert outcome.dumps[dump]["reasons"] == {"malformed_document": 1}, outcome.dumps[dump]
    good_mem0_ingested(outcome)


# --- wide and long tables ----------------------------------------------------------------------


@pytest.mark.parametrize("extra", [20_000, 1_000_000])
def test_csv_with_too_many_columns_fails_naming_the_count(tmp_path: Path, extra: int) -> None:
    outcome = run(tmp_path, {"mnueron/wide.csv": wide_csv(extra), "mnueron/good.csv": GOOD_CSV})
    error = outcome.dumps["mnueron/wide.csv"]["error"]
    assert error.startswith("DumpFormatError: ") and "wide.csv" in error, error
    assert f"{extra + 5:,} columns" in error and "4,096" in error, error
    assert outcome.counts("mnueron/good.csv")["accepted"] == 2


def test_csv_header_under_the_limit_is_read_in_linear_time(tmp_path: Path) -> None:
    outcome = run(tmp_path, {"mnueron/wide.csv": wide_csv(4000)})
    assert outcome.counts("mnueron/wide.csv")["accepted"] == 1
    assert outcome.wall < 5


def test_huge_csv_cell_costs_its_row_only(tmp_path: Path) -> None:
    outcome = run(tmp_path, {"mnueron/cell.csv": csv_with_huge_cell(64 * MIB), "mnueron/good.csv": GOOD_CSV})
    counts = outcome.counts("mnueron/cell.csv")
    assert (counts["accepted"], counts["rejected"]) == (2, 1), counts
    assert outcome.dumps["mnueron/cell.csv"]["reasons"] == {"payload_too_large": 1}
    assert details(tmp_path, "mnueron/cell.csv") == [
        f"line 3: a row of at least {64 * MIB + 23:,} characters; one record may hold 8,388,608; row skipped"
    ]


def test_markdown_line_of_hundreds_of_megabytes(tmp_path: Path) -> None:
    outcome = run(tmp_path, {"memsolus/big.md": markdown_with_long_line(256 * MIB)})
    counts = outcome.counts("memsolus/big.md")
    assert (counts["accepted"], counts["rejected"]) == (2, 1), counts
    assert outcome.dumps["memsolus/big.md"]["reasons"] == {"payload_too_large": 1}


def test_markdown_lines_that_make_a_regex_backtrack(tmp_path: Path) -> None:
    outcome = run(tmp_path, {"memsolus/spaces.md": markdown_backtracking(1_000_000)})
    assert outcome.counts("memsolus/spaces.md")["read"] == 4
    assert outcome.wall < 10


def overlapping_zip(entry: bytes, copies: int) -> bytes:
    """A zip whose central directory lists the same entry (same name, same data) ``copies`` times:
    each copy passes every per-entry check, together they inflate without end."""
    data = backup_zip({"conversations-000.json": entry}, method=zipfile.ZIP_DEFLATED)
    start = data.find(b"PK\x01\x02")
    end = data.find(b"PK\x05\x06")
    record = data[start:end]
    eocd = bytearray(data[end:])
    struct.pack_into("<HHII", eocd, 8, copies, copies, len(record) * copies, start)
    return data[:start] + record * copies + bytes(eocd)


def test_zip_entries_sharing_their_data_stop_at_the_archive_ratio(tmp_path: Path) -> None:
    text = "".join("hello " * 60 + os.urandom(8).hex() for _ in range(200))  # deflates about 30:1
    entry = json.dumps([conversation(f"c-{i}", text) for i in range(20)]).encode()
    outcome = run(tmp_path, {"openai/export.zip": overlapping_zip(entry, 3000), "mem0/good.json": GOOD_MEM0})
    reasons = outcome.dumps["openai/export.zip"]["reasons"]
    assert reasons.get("unsafe_archive_entry") == 1, reasons
    (detail,) = [d for d in details(tmp_path, "openai/export.zip") if "archive" in d]
    assert re.fullmatch(
        r"entry 'conversations-000\.json': the archive's entries together give out more than [\d,]+ bytes "
        r"from a [\d,]+-byte file \(ratio above 200; entries sharing their data\); the [\d,]+ entries after "
        r"it are not read either; the rest of the entry is not read",
        detail,
    ), detail
    assert outcome.wall < 15
    good_mem0_ingested(outcome)


HISTORY_DB = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
con.execute(
    "CREATE TABLE history (id TEXT PRIMARY KEY, memory_id TEXT, old_memory TEXT, new_memory TEXT, "
    "event TEXT, created_at DATETIME, updated_at DATETIME, is_deleted INTEGER, actor_id TEXT, role TEXT)"
)
row = "INSERT INTO history VALUES (?, ?, ?, {}, ?, ?, NULL, 0, NULL, 'user')"
con.execute(row.format("?"), ("h1", "m1", None, "likes tea", "ADD", "2025-01-01T00:00:00"))
huge = ("h2", "m1", "likes tea", int(sys.argv[2]), "UPDATE", "2025-01-02")
con.execute(row.format("printf('%.*c', ?, 'x')"), huge)
con.execute(row.format("?"), ("h3", "m2", None, "likes coffee", "ADD", "2025-01-03T00:00:00"))
con.execute(row.format("?"), ("h4", "m1", None, None, "DELETE", "2025-01-04T00:00:00"))
con.commit()
"""


def history_db_with_huge_value(size: int) -> Callable[[Path], None]:
    """A Mem0 history database (2025-05 schema) whose UPDATE holds ``size`` bytes of text, then a
    DELETE without ``old_memory`` (whose text would be that UPDATE's): built by SQLite in a child
    process, so the test's own process never holds the value."""

    def write(path: Path) -> None:
        subprocess.run([sys.executable, "-c", HISTORY_DB, str(path), str(size)], check=True, timeout=120)

    return write


def test_a_history_database_value_of_hundreds_of_megabytes_costs_its_row_only(tmp_path: Path) -> None:
    """SQLite hands a value over whole: a row larger than one record may be is judged by its
    length in SQL and never fetched, nor is it fetched as the text a later DELETE removes."""
    dump = "mem0/history.db"
    files = {dump: history_db_with_huge_value(300 * MIB), "mem0/good.json": GOOD_MEM0}
    outcome = run(tmp_path, files, templates={"mem0": "org:acme"})  # the table holds no user ids
    good_mem0_ingested(outcome)
    assert outcome.counts(dump) == {"read": 4, "accepted": 2, "rejected": 2, "duplicate": 0}
    assert outcome.dumps[dump]["reasons"] == {"payload_too_large": 2}
    row = 300 * MIB + len("h2m1likes teaUPDATE2025-01-020user")  # every column's bytes
    assert details(tmp_path, dump) == [
        f"history row 2: {row:,} bytes; one record may hold {4 * MIB:,}; row skipped",
        f"the text it deletes (the memory's previous row, {row:,} bytes) is larger than one record "
        f"may hold ({4 * MIB:,})",
    ]
