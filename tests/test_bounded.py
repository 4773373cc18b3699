"""The bounded readers of ``connectors.kit.bounded`` on small inputs (the hostile sizes run in a
child process in ``test_hostile_containers``): line splitting with a length limit, the layers'
bounds and what they name, compressed dump files refused by name."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import fsspec
import pytest

from connectors import registry
from connectors.base import ReadOptions
from connectors.errors import DumpFormatError
from connectors.kit import archive, bounded
from connectors.kit.bounded import Line
from connectors.schema import RejectReason


def split(data: bytes, limit: int) -> list[Line]:
    return list(bounded.lines(io.BytesIO(data), limit=limit))


def test_lines_longer_than_the_limit_come_as_their_head_and_size() -> None:
    data = b"short\r\n" + b"x" * 5000 + b"\nafter\n\nlast"
    found = split(data, 100)
    assert [(x.number, x.size, x.oversized) for x in found] == [
        (0, 6, False),
        (1, 5000, True),
        (2, 5, False),
        (3, 0, False),
        (4, 4, False),
    ]
    assert found[0].data == b"short"
    assert found[1].data == b"x" * bounded.KEPT_PREFIX_BYTES


def test_an_oversized_line_spanning_blocks_and_ending_the_stream() -> None:
    data = b"a\n" + b"y" * (3 * (1 << 20) + 17)
    found = split(data, 1 << 20)
    assert [(x.number, x.size, x.oversized) for x in found] == [(0, 1, False), (1, 3 * (1 << 20) + 17, True)]
    exact = split(b"z" * 100 + b"\nq", 100)
    assert [(x.size, x.oversized) for x in exact] == [(100, False), (1, False)]


def test_a_layer_stops_at_its_limit_and_names_itself() -> None:
    meter = bounded.Meter(io.BytesIO(b"x" * 64), 64)
    meter.read()
    layer = bounded.Layer(io.BytesIO(b"y" * 5000), name="entry 'a.json'", meter=meter, limit=4096)
    with pytest.raises(bounded.Unreadable) as caught:
        layer.read()
    assert caught.value.reason == RejectReason.UNSAFE_ARCHIVE_ENTRY
    assert caught.value.detail == "entry 'a.json' decompresses to more than 4,096 bytes (the limit)"


def test_a_gzip_inflating_past_the_ratio_is_a_bomb() -> None:
    packed = gzip.compress(b"a" * (20 << 20))  # about 1000:1
    meter = bounded.Meter(io.BytesIO(packed), len(packed))
    outer = bounded.as_io(bounded.Layer(meter, name="entry 'm.gz'", meter=meter))
    with pytest.raises(
        bounded.Unreadable, match=r"m\.gz \(gzip\) inflates [\d,]+ bytes of the file .*\(ratio above 200\)"
    ):
        for _ in bounded.lines(bounded.gunzip(outer, "m.gz (gzip)")):
            pass


def test_a_broken_gzip_is_malformed_naming_the_layer() -> None:
    packed = gzip.compress(b"line\n" * 1000)
    meter = bounded.Meter(io.BytesIO(packed[:-12]), len(packed))
    outer = bounded.as_io(bounded.Layer(meter, name="entry 'm.gz'", meter=meter))
    with pytest.raises(bounded.Unreadable) as caught:
        bounded.gunzip(outer, "m.gz (gzip)").read()
    assert caught.value.reason == RejectReason.MALFORMED_DOCUMENT
    assert caught.value.detail.startswith("m.gz (gzip) is broken after")


def test_an_entry_lying_about_its_size_is_named_when_read(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("data.json", b"[" + b"1," * 5000 + b"1]")
    data = bytearray(buf.getvalue())
    at = data.find(b"PK\x01\x02")
    data[at + 24 : at + 28] = (100).to_bytes(4, "little")  # the directory says 100 bytes
    (tmp_path / "a.zip").write_bytes(bytes(data))
    fs, path = fsspec.filesystem("file"), str(tmp_path / "a.zip")
    with archive.open_zip(fs, path, expected="x") as zipped:
        (entry,) = archive.entries(zipped)
        with archive.open_entry(zipped, entry) as f, pytest.raises(bounded.Unreadable) as caught:
            f.read()
    assert caught.value.reason == RejectReason.MALFORMED_DOCUMENT
    assert (
        "entry 'data.json' is broken after 0 bytes (Bad CRC-32 for file 'data.json')" in caught.value.detail
    )


@pytest.mark.parametrize("system", ["mem0", "cortexdb", "memsolus", "mnueron", "zep", "letta", "openai"])
@pytest.mark.parametrize(
    ("kind", "data"),
    [("gzip", gzip.compress(b'{"id": "a"}\n', mtime=0)), ("zstd", b"\x28\xb5\x2f\xfd" + b"\0" * 20)],
    ids=["gzip", "zstd"],
)
def test_compressed_dump_files_are_refused_by_name(
    tmp_path: Path, system: str, kind: str, data: bytes
) -> None:
    (tmp_path / "dump.jsonl.z").write_bytes(data)
    fs, path = fsspec.filesystem("file"), str(tmp_path / "dump.jsonl.z")
    options = ReadOptions(tenant_id="t", scope_template="x")
    with pytest.raises(DumpFormatError, match=rf"dump\.jsonl\.z: not a .*; found a {kind} file"):
        list(registry.get(system).read_fn(fs, path, options))
