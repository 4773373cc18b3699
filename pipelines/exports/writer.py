"""Write one export: select the rows in DuckDB and stream them to the destination.

JSON, NDJSON and CSV (and both profiles) are one ``COPY (SELECT …) TO`` — the floor itself — to
any fsspec location (object stores through ``register_filesystem``), compressed by DuckDB, split
into numbered parts by ``FILE_SIZE_BYTES``. Markdown streams record batches through
:mod:`pipelines.exports.markdown`. DuckDB runs with a memory limit and a private spill
directory, so a sort of any size stays in bounded memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb

from connectors.kit.sql import duckdb_connect, quote_literal
from pipelines.exports import formats, markdown
from pipelines.exports.request import FILE_STEM, ExportRequest
from pipelines.exports.select import create_source, select
from pipelines.store.episodes import EpisodeStore
from pipelines.store.locations import Location

#: DuckDB's memory limit for an export: sorting spills to disk past it (peak RSS stays < 1 GiB).
MEMORY_LIMIT = "640MB"
#: Markdown's sort spills sooner: its Python writer and Arrow batches live beside DuckDB's memory.
MARKDOWN_MEMORY_LIMIT = "384MB"
#: Progress: (rows written, total rows) — rows estimated from DuckDB's progress for COPY.
Progress = Callable[[int, int], None]


def _connect(spill: str, limit: str) -> duckdb.DuckDBPyConnection:
    con = duckdb_connect(memory_limit=limit, temp_directory=spill)
    con.execute("SET TimeZone = 'UTC'")
    return con


def _watch(con: duckdb.DuckDBPyConnection, total: int, progress: Progress) -> Callable[[], None]:
    """Report DuckDB's progress of the running statement every half second; returns stop()."""
    stop = threading.Event()
    con.execute("SET enable_progress_bar = true")
    con.execute("SET enable_progress_bar_print = false")

    def run() -> None:
        while not stop.wait(0.5):
            pct = con.query_progress()
            if pct >= 0:
                progress(min(total, int(total * pct / 100)), total)

    thread = threading.Thread(target=run, daemon=True, name="memport-export-progress")
    thread.start()

    def done() -> None:
        stop.set()
        thread.join()

    return done


def _copy(
    con: duckdb.DuckDBPyConnection,
    request: ExportRequest,
    sql: str,
    params: list[Any],
    dest: Location,
    basename: str,
) -> tuple[int, list[str]]:
    ext = formats.file_extension(request)
    options = formats.copy_options(request)
    if request.max_part_bytes:
        target = dest.uri(dest.root)
        options += (
            f", FILE_SIZE_BYTES {int(request.max_part_bytes)}, "
            f"FILENAME_PATTERN {quote_literal(basename + '-{i}')}, "
            f"FILE_EXTENSION {quote_literal(ext)}, OVERWRITE_OR_IGNORE true"
        )
    else:
        target = dest.uri(dest.path(f"{basename}.{ext}"))
    if dest.is_local:
        dest.fs.makedirs(dest.root, exist_ok=True)
    (rows,) = con.execute(f"COPY ({sql}) TO {quote_literal(target)} ({options})", params).fetchall()[0]
    if not request.max_part_bytes:
        return int(rows), [dest.path(f"{basename}.{ext}")]
    # listed, not globbed: the destination's own path may hold glob characters
    parts = {}
    for path in dest.fs.ls(dest.root, detail=False):
        number = path.rsplit("/", 1)[1].removeprefix(f"{basename}-").removesuffix(f".{ext}")
        if number.isdigit() and path.rsplit("/", 1)[1] == f"{basename}-{number}.{ext}":
            parts[int(number)] = path
    # numbered parts in number order (DuckDB's {i} is not zero-padded)
    return int(rows), [parts[n] for n in sorted(parts)]


def _describe(dest: Location, paths: list[str]) -> list[dict[str, Any]]:
    def one(path: str) -> dict[str, Any]:
        digest, size = hashlib.sha256(), 0
        with dest.fs.open(path, "rb") as f:
            while block := f.read(8 << 20):
                digest.update(block)
                size += len(block)
        return {
            "name": path.rsplit("/", 1)[1],
            "url": dest.uri(path),
            "bytes": size,
            "sha256": digest.hexdigest(),
        }

    with ThreadPoolExecutor(max_workers=2) as pool:  # hashlib releases the GIL
        return list(pool.map(one, paths))


def write_export(
    store: EpisodeStore,
    request: ExportRequest,
    dest: Location,
    basename: str,
    *,
    title: str,
    progress: Progress | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Write the request's rows to ``dest``; returns the row count and the files written.

    ``basename`` is a file stem (see :func:`pipelines.exports.request.file_stem`), never a path.
    """
    if not FILE_STEM.fullmatch(basename):
        raise ValueError(f"export file stem {basename!r} is not a plain file name; see file_stem()")
    spill = tempfile.mkdtemp(prefix="memport-export-")
    try:
        limit = MARKDOWN_MEMORY_LIMIT if request.format == "markdown" else MEMORY_LIMIT
        with _connect(spill, limit) as con:
            create_source(con, store)
            if not dest.is_local:
                with contextlib.suppress(duckdb.Error):  # registered already, for the store
                    dest.register_with(con)
            selection = select(con, request.filters)
            if request.format == "markdown":
                rows, paths = markdown.write(
                    con, selection, request, dest, basename, title=title, progress=progress
                )
            else:
                # no global sort and no insertion order: rows stream from the files on every core
                # in bounded memory (a sort or an ordered writer buffers the export; measured)
                con.execute("SET preserve_insertion_order = false")
                sql = f"SELECT {formats.projection(request)} {selection.from_where}"
                stop = None
                if progress is not None:
                    (total,) = con.execute(
                        f"SELECT count(*) {selection.from_where}", selection.params
                    ).fetchall()[0]
                    stop = _watch(con, total, progress)
                try:
                    rows, paths = _copy(con, request, sql, selection.params, dest, basename)
                finally:
                    if stop is not None:
                        stop()
                if progress is not None:
                    progress(rows, rows)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    return rows, _describe(dest, paths)
