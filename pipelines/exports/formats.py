"""The export formats as DuckDB projections over a selection, written by ``COPY … TO``.

- ``json`` (one array) and ``ndjson`` (one object per line): every canonical column, in the
  schema's order; timestamps as ISO 8601 UTC with microseconds (``2025-05-02T16:20:00.000000Z``);
  ``categories``/``tags`` as arrays; ``metadata`` as the object itself, re-serialized by DuckDB's
  JSON writer (compact; numbers such as ``0.50`` written ``0.5``, ``\u00e9`` escapes decoded): the
  same JSON values, not always the same text. CSV keeps the metadata text exactly.
- ``csv``: RFC 4180 (CRLF, ``"`` doubled), header :data:`CSV_HEADER` (the canonical columns);
  lists and metadata as JSON text; NULL is an empty field, an empty string is ``""``. With
  ``neutralize_formulas`` (default) a text cell starting with ``= + - @``, tab, CR or ``'`` gets a
  ``'`` prefix; :func:`unneutralize` (one leading ``'`` removed) restores it exactly.
- ``cortexdb`` profile (ndjson): the CortexDB import envelope of PEER_FORMATS §5.1.
- ``mnueron`` profile (csv): the Mnueron CSV header; times as epoch milliseconds.

Rows come in no particular order: they stream from the store's files on every core, with no
global sort (which would cost more than the export itself at 1,000,000 rows, and memory). The
same store and request give the same rows; Markdown alone is ordered (by scope and session).
"""

from __future__ import annotations

from connectors.kit.sql import quote_literal
from connectors.schema import EPISODE_SCHEMA
from pipelines.exports.request import ExportRequest

TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
CSV_HEADER = tuple(EPISODE_SCHEMA.names())
MNUERON_HEADER = ("id", "content", "namespace", "tags", "source", "source_ref", "created_at", "updated_at")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")

TIMESTAMP_COLUMNS = {n for n, t in EPISODE_SCHEMA.items() if str(t).startswith("Datetime")}
LIST_COLUMNS = {"categories", "tags"}
NUMBER_COLUMNS = {"dump_record"}

#: File extension per (format, profile).
EXTENSIONS = {
    ("json", None): "json",
    ("ndjson", None): "ndjson",
    ("csv", None): "csv",
    ("markdown", None): "md",
    ("ndjson", "cortexdb"): "cortexdb.jsonl",
    ("csv", "mnueron"): "mnueron.csv",
}


def iso(column: str) -> str:
    return f"strftime({column}, '{TS_FORMAT}')"


def neutralized(expr: str) -> str:
    starts = ", ".join(quote_literal(c) for c in FORMULA_STARTS)
    return f"CASE WHEN left({expr}, 1) IN ({starts}) THEN '''' || {expr} ELSE {expr} END"


def unneutralize(cell: str) -> str:
    """The cell as it was before neutralization (exact inverse: one leading ``'`` removed)."""
    return cell[1:] if cell.startswith("'") else cell


def _canonical(request: ExportRequest) -> str:
    csv = request.format == "csv"
    cols = []
    for name in CSV_HEADER:
        col = f"v.{name}"
        if name in TIMESTAMP_COLUMNS:
            expr = iso(col)
        elif name in LIST_COLUMNS:
            expr = f"to_json({col})::VARCHAR" if csv else col
        elif name == "metadata":
            expr = col if csv else f"{col}::JSON"
        elif name in NUMBER_COLUMNS:
            expr = col
        else:
            expr = neutralized(col) if csv and request.neutralize_formulas else col
        cols.append(f"{expr} AS {name}")
    return ", ".join(cols)


def _cortexdb() -> str:
    modality = (
        "coalesce(json_extract_string(v.metadata, '$._source.modality'), "
        "CASE WHEN v.type = 'message' THEN 'conversation' ELSE v.type END)"
    )
    return (
        "v.scope AS scope, "
        f"{modality} AS modality, "
        "{'kind': 'message', 'role': v.role, 'text': v.content} AS content, "
        f"{{'observed_at': {iso('v.observed_at')}, 'labels': v.tags}} AS context, "
        "v.idempotency_key AS idempotency_key, "
        "v.author AS observed_actor, "
        "v.source AS source"
    )


def _mnueron(request: ExportRequest) -> str:
    def text(expr: str) -> str:
        return neutralized(expr) if request.neutralize_formulas else expr

    return ", ".join(
        [
            f"{text('v.episode_id')} AS id",
            f"{text('v.content')} AS content",
            f"{text('v.namespace')} AS namespace",
            "to_json(v.tags)::VARCHAR AS tags",
            f"{text('coalesce(v.source, v.source_system)')} AS source",
            f"{text('v.idempotency_key')} AS source_ref",
            "epoch_ms(coalesce(v.created_at, v.observed_at)) AS created_at",
            "epoch_ms(coalesce(v.updated_at, v.created_at, v.observed_at)) AS updated_at",
        ]
    )


def projection(request: ExportRequest) -> str:
    if request.profile == "cortexdb":
        return _cortexdb()
    if request.profile == "mnueron":
        return _mnueron(request)
    return _canonical(request)


def copy_options(request: ExportRequest) -> str:
    """The ``COPY … TO`` options of the request's format (not markdown)."""
    opts = {
        "json": ["FORMAT json", "ARRAY true"],
        "ndjson": ["FORMAT json"],
        "csv": ["FORMAT csv", "HEADER true", "QUOTE '\"'", "ESCAPE '\"'", "NEW_LINE '\\r\\n'"],
    }[request.format]
    opts.append(f"COMPRESSION {request.compression or 'none'}")
    return ", ".join(opts)


def file_extension(request: ExportRequest) -> str:
    ext = EXTENSIONS[(request.format, request.profile)]
    return ext + {"gzip": ".gz", "zstd": ".zst", None: ""}[request.compression]
