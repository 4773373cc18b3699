"""``memport sql``: one query against the catalog, as a table for people or as CSV or JSON for programs.

- The limit is part of the query DuckDB runs (``LIMIT n + 1``, the extra row only tells whether
  more exist), so ``--limit 10`` over the whole store reads what ten rows need. The table's default
  is 50 rows; CSV and JSON default to every row and are written batch by batch as DuckDB produces
  them, never holding the whole result.
- Every column is shown. CSV and JSON never cut text. The table cuts cells longer than
  ``--max-width`` for display, ending them in "…", says so under the table, and shows control
  characters as their visible symbols (a newline as ␊; nothing in a record can move the cursor or
  recolour the terminal).
- Values: timestamps in ISO 8601 (TIMESTAMPTZ in UTC, ``+00:00``); lists, structs and maps as JSON
  (text in CSV); in JSON, numbers as numbers (NaN and infinities, which JSON lacks, as the strings
  ``"nan"``, ``"inf"``, ``"-inf"``); other types as DuckDB's text for them. JSON is one object per
  line (NDJSON), keys in column order, a repeated column name made unique as DuckDB does (``a_1``).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

import duckdb
import polars as pl

from connectors.kit.sql import quote_literal
from pipelines.settings import setting

FORMATS = ("table", "csv", "json")
TABLE_ROWS = 50
MAX_WIDTH = 80
BATCH_ROWS = 10_000
_RESULT = "memport_result"  # the name the query's result has in the wrapping query
_NUMERIC = {
    "tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint", "uinteger",
    "ubigint", "uhugeint", "float", "double", "decimal",
}  # fmt: skip
_NESTED = {"list", "struct", "map", "array", "union"}
_TIMESTAMPS = {"timestamp", "timestamp_ms", "timestamp_s"}
#: Control characters (C0, DEL, C1) shown as visible symbols in the table: ␊ for a newline, ␛ for ESC.
_VISIBLE = {c: 0x2400 + c for c in range(32)} | {0x7F: 0x2421} | {c: 0xFFFD for c in range(0x80, 0xA0)}


def add_command(sub: Any) -> None:
    p = sub.add_parser(
        "sql",
        help="run a SQL query against the catalog (read-only)",
        description="Run one query against the catalog (README, Querying the catalog). The table "
        "is for reading; csv and json (one object per line) are for programs and never cut text.",
    )
    p.add_argument("query")
    p.add_argument("--format", choices=FORMATS, default="table", help="table (default), csv or json (NDJSON)")
    p.add_argument(
        "--limit",
        type=_non_negative,
        help=f"at most this many rows, applied in the query (default: {TABLE_ROWS} for the table, "
        "every row for csv and json; 0 = every row)",
    )
    p.add_argument(
        "--max-width",
        type=_non_negative,
        default=MAX_WIDTH,
        help=f"table: cut longer cells for display, and say so (default {MAX_WIDTH}; 0 = never)",
    )
    p.set_defaults(func=run)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from pipelines.store.catalog import connect

    limit = args.limit if args.limit is not None else (TABLE_ROWS if args.format == "table" else 0)
    try:
        with connect(setting("MEMPORT_CATALOG_PATH")) as con:
            if args.format != "table":
                con.execute("SET enable_progress_bar = false")  # it writes to stdout, into the data
            result = con.sql(args.query)
            if result is None:  # a statement without a result
                return 0
            if args.format == "table":
                _table(result, limit, args.max_width, sys.stdout)
            else:
                writer = _csv if args.format == "csv" else _json
                if _stream(result, limit, writer, sys.stdout):
                    print(f"memport sql: {_more(limit)}", file=sys.stderr)
    except duckdb.Error as exc:  # a mistyped table or column, a lock: DuckDB's message says which
        print(f"memport sql: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `memport sql … | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _more(limit: int, *, table: bool = False) -> str:
    streams = "; --format csv or json streams them" if table else ""
    return f"first {limit:,} rows; more exist (--limit N for N, --limit 0 for every row{streams})"


def _limited(result: duckdb.DuckDBPyRelation, columns: list[str], limit: int) -> duckdb.DuckDBPyRelation:
    """``SELECT columns FROM (the query) LIMIT limit + 1``; its columns are named by position c1…cn
    (a query's own names may repeat), which ``columns`` (SQL expressions) refer to."""
    positions = ", ".join(f"c{i}" for i in range(1, len(result.columns) + 1))
    tail = f" LIMIT {int(limit) + 1}" if limit else ""
    limited = result.query(_RESULT, f"SELECT {', '.join(columns)} FROM {_RESULT} AS q({positions}){tail}")
    assert limited is not None  # a SELECT always has a result
    return limited


def _iso(column: str, type_id: str) -> str | None:
    """ISO 8601 text of a timestamp column (fraction only when there is one, as Python's isoformat)."""
    if type_id == "timestamp with time zone":
        ts, zone = f"timezone('UTC', {column})", "+00:00"
    elif type_id in _TIMESTAMPS:
        ts, zone = f"{column}::TIMESTAMP", ""
    elif type_id == "timestamp_ns":
        return f"strftime({column}, '%Y-%m-%dT%H:%M:%S.%n')"
    else:
        return None
    return (
        f"CASE WHEN NOT isfinite({column}) THEN {column}::VARCHAR "
        f"WHEN microsecond({ts}) % 1000000 = 0 THEN strftime({ts}, '%Y-%m-%dT%H:%M:%S{zone}') "
        f"ELSE strftime({ts}, '%Y-%m-%dT%H:%M:%S.%f{zone}') END"
    )


def _as_text(column: str, type_id: str) -> str:
    """The column as VARCHAR, for CSV and the table."""
    if type_id in _NESTED:
        return f"to_json({column})::VARCHAR"
    return _iso(column, type_id) or f"{column}::VARCHAR"


def _as_json(column: str, type_id: str) -> str:
    """The column as a JSON value."""
    if iso := _iso(column, type_id):
        return f"to_json({iso})"
    if type_id in ("float", "double"):
        return f"CASE WHEN isfinite({column}) THEN to_json({column}) ELSE to_json({column}::VARCHAR) END"
    return f"to_json({column})"


def _unique(names: list[str]) -> list[str]:
    """Names made unique ignoring case, as DuckDB names a repeated column in a subquery: a, a_1, a_2."""
    seen: set[str] = set()
    unique = []
    for name in names:
        candidate, n = name, 0
        while candidate.lower() in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate.lower())
        unique.append(candidate)
    return unique


Writer = Callable[[duckdb.DuckDBPyRelation, int, TextIO], "duckdb.DuckDBPyRelation"]


def _csv(result: duckdb.DuckDBPyRelation, limit: int, out: TextIO) -> duckdb.DuckDBPyRelation:
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(result.columns)
    out.write(header.getvalue())
    types = [t.id for t in result.types]
    return _limited(result, [_as_text(f"c{i}", t) for i, t in enumerate(types, 1)], limit)


def _json(result: duckdb.DuckDBPyRelation, limit: int, out: TextIO) -> duckdb.DuckDBPyRelation:
    pairs = [
        f"{quote_literal(name)}, {_as_json(f'c{i}', t.id)}"
        for i, (name, t) in enumerate(zip(_unique(result.columns), result.types, strict=True), 1)
    ]
    return _limited(result, [f"json_object({', '.join(pairs)})::VARCHAR"], limit)


def _stream(result: duckdb.DuckDBPyRelation, limit: int, writer: Writer, out: TextIO) -> bool:
    """Write the result batch by batch; True when rows past ``limit`` exist (and were not written)."""
    rows = 0
    for batch in writer(result, limit, out).to_arrow_reader(BATCH_ROWS):
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        if limit and rows + frame.height > limit:
            frame = frame.head(limit - rows)
            _write(writer, frame, out)
            return True
        rows += frame.height
        _write(writer, frame, out)
    return False


def _write(writer: Writer, frame: pl.DataFrame, out: TextIO) -> None:
    if not frame.height:
        return
    if writer is _csv:
        out.write(frame.write_csv(include_header=False))
    else:
        out.write("\n".join(frame.to_series().to_list()) + "\n")


def _table(result: duckdb.DuckDBPyRelation, limit: int, max_width: int, out: TextIO) -> None:
    names, types = result.columns, [t.id for t in result.types]
    texts = [_as_text(f"c{i}", t) for i, t in enumerate(types, 1)]
    rows = _limited(result, texts, limit).fetchall()
    more = bool(limit) and len(rows) > limit
    rows = rows[:limit] if limit else rows
    cut = False

    def cell(value: str | None) -> str:
        nonlocal cut
        text = "NULL" if value is None else value.translate(_VISIBLE)
        if max_width and len(text) > max_width:
            cut = True
            return text[: max_width - 1] + "…"
        return text

    grid = [[cell(v) for v in row] for row in rows]
    head = [[cell(n) for n in names], [str(t) for t in result.types]]
    widths = [max(len(r[i]) for r in head + grid) for i in range(len(names))]
    right = [t in _NUMERIC for t in types]

    def line(values: list[str], align: bool) -> str:
        return " │ ".join(
            v.rjust(w) if align and r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ).rstrip()

    out.write("\n".join([line(h, False) for h in head] + ["─┼─".join("─" * w for w in widths)]) + "\n")
    out.write("".join(line(r, True) + "\n" for r in grid))
    out.write(
        _more(limit, table=True) + "\n" if more else f"{len(grid):,} row{'' if len(grid) == 1 else 's'}\n"
    )
    if cut:
        out.write(
            f"Text longer than {max_width} characters is cut (…) for display: --max-width 0 shows it "
            "whole; --format csv or json gives it whole.\n"
        )
