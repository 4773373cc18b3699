"""Markdown: a readable document, streamed in record batches, that hostile content cannot break.

Layout: a title, the filters used, the count, then ``## Scope`` and ``### Session`` headings (rows
ordered by tenant, scope, session, observed time) and one ``####`` line per episode (time, type,
role, author) followed by its content in a fenced block. DuckDB renders each row's text
(vectorized); Python only adds the headings where the scope or session changes and writes.

Escaping: inline text (scope, session, author…) has newlines folded to spaces and every Markdown
punctuation character backslash-escaped, so it cannot open a heading, link, table, emphasis or
HTML. Content goes in a backtick fence longer than the longest backtick run inside it, so no line
of the content can close the fence, and inside a fence nothing is interpreted (headings, HTML,
pipes are shown as typed).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any, cast

import duckdb

from pipelines.exports.formats import iso
from pipelines.exports.request import ExportRequest
from pipelines.exports.select import Selection
from pipelines.store.locations import Location

ORDER = "v.tenant_id, v.scope, v.session_id NULLS FIRST, v.observed_at, v.episode_id"
BATCH_ROWS = 20_000
_PUNCT = r"([\\`*_\[\]<>#|!~&])"


def inline_sql(expr: str) -> str:
    """SQL: text safe inside a Markdown line (no line breaks, punctuation escaped)."""
    return f"regexp_replace(regexp_replace({expr}, '[\\r\\n]+', ' ', 'g'), '{_PUNCT}', '\\\\\\1', 'g')"


def inline(text: str) -> str:
    """Python twin of :func:`inline_sql`, for the header's filter values."""
    out = " ".join(text.splitlines())
    return "".join("\\" + c if c in "\\`*_[]<>#|!~&" else c for c in out)


_ROW_SQL = f"""
SELECT v.tenant_id, v.scope, v.session_id,
  '#### ' || concat_ws(' · ', {iso("v.observed_at")}, v.type, {inline_sql("v.role")},
                       {inline_sql("v.author")}) || chr(10) || chr(10)
  || fence || 'text' || chr(10) || v.content || chr(10) || fence || chr(10) || chr(10) AS block
FROM (SELECT *, repeat('`', greatest(3, 1 + coalesce(list_max(list_transform(
        regexp_extract_all(v.content, '`+'), lambda x: length(x))), 0))) AS fence
      $FROM_WHERE) v
ORDER BY {ORDER}
"""


@contextmanager
def _open(dest: Location, path: str, compression: str | None) -> Iterator[IO[bytes]]:
    if dest.is_local:
        dest.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with dest.fs.open(path, "wb") as raw:
        if compression == "gzip":
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
                yield cast(IO[bytes], gz)
        else:
            yield raw


def _header(title: str, request: ExportRequest, total: int, part: int | None) -> str:
    lines = [f"# {inline(title)}" + (f" (part {part + 1})" if part is not None else ""), ""]
    lines.append(f"Exported {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} by memport.")
    lines += ["", "Filters:", ""]
    for key, value in request.filters.used().items():
        lines.append(f"- {inline(key)}: {inline(str(value))}")
    lines += ["", f"**{total:,} episodes**", "", ""]
    return "\n".join(lines)


def write(
    con: duckdb.DuckDBPyConnection,
    selection: Selection,
    request: ExportRequest,
    dest: Location,
    basename: str,
    *,
    title: str,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, list[str]]:
    """Write the document (in parts if ``max_part_bytes``); returns rows and file paths."""
    (total,) = con.execute(f"SELECT count(*) {selection.from_where}", selection.params).fetchall()[0]
    ext = "md" + (".gz" if request.compression == "gzip" else "")
    all_tenants = request.filters.tenant_id == "*"
    paths: list[str] = []
    rows = 0
    state: dict[str, Any] = {"group": None}
    query = con.sql(_ROW_SQL.replace("$FROM_WHERE", selection.from_where), params=selection.params)
    batches = query.to_arrow_reader(BATCH_ROWS)

    def headings(tenant: str, scope: str, session: str | None, *, force: bool) -> str:
        out = ""
        if force or state["group"] is None or state["group"][:2] != (tenant, scope):
            where = f" (tenant {inline(tenant)})" if all_tenants else ""
            out += f"## Scope {inline(scope)}{where}\n\n"
        if force or state["group"] != (tenant, scope, session):
            out += f"### Session {inline(session)}\n\n" if session is not None else "### No session\n\n"
        state["group"] = (tenant, scope, session)
        return out

    def parts() -> Iterator[tuple[int | None, str]]:
        n = 0
        while True:
            if request.max_part_bytes:
                yield n, dest.path(f"{basename}-{n}.{ext}")
            else:
                yield None, dest.path(f"{basename}.{ext}")
            n += 1

    names = parts()
    part, path = next(names)
    paths.append(path)
    stack = _open(dest, path, request.compression)
    f = stack.__enter__()
    try:
        f.write(_header(title, request, total, part).encode())
        written = 0
        for batch in batches:
            cols = batch.to_pydict()
            chunk: list[str] = []
            for tenant, scope, session, block in zip(
                cols["tenant_id"], cols["scope"], cols["session_id"], cols["block"], strict=True
            ):
                if request.max_part_bytes and written >= request.max_part_bytes:
                    data = "".join(chunk).encode()
                    f.write(data)
                    chunk = []
                    stack.__exit__(None, None, None)
                    part, path = next(names)
                    paths.append(path)
                    stack = _open(dest, path, request.compression)
                    f = stack.__enter__()
                    head = _header(title, request, total, part)
                    f.write(head.encode())
                    written = len(head)
                    state["group"] = None
                text = headings(tenant, scope, session, force=False) + block
                chunk.append(text)
                written += len(text)
            f.write("".join(chunk).encode())
            rows += batch.num_rows
            if progress:
                progress(rows, total)
    except BaseException as exc:
        stack.__exit__(type(exc), exc, exc.__traceback__)
        raise
    stack.__exit__(None, None, None)
    return rows, paths
