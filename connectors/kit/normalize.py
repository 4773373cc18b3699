"""The shared back half of every connector: staged rows → canonical episodes + rejects.

A connector writes one SQL projection from the raw relation to *staged* columns (the canonical
fields, still loose: ``type`` as text, ``scope_<field>`` values for the scope template, an optional
connector-specific ``reason``/``detail``). :func:`run` streams it over the dump, and :func:`finish`
does the normalization in Polars: identity and content hashes, the scope template filled per row,
the checks every system shares, and the split of episodes from rejects.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from datetime import UTC, datetime, timedelta

import polars as pl
import polars_hash as plh
import pyarrow as pa
from fsspec import AbstractFileSystem

from connectors.base import PATH_IDENTITY, Batch, ReadOptions, Unread, scope_placeholders
from connectors.errors import DumpFormatError
from connectors.kit import bounded, sources
from connectors.schema import (
    EPISODE_SCHEMA,
    EPISODE_TYPES,
    MAX_CONTENT_BYTES,
    MAX_DEPTH,
    PRIORITIES,
    REJECT_SCHEMA,
    ROLES,
    RejectReason,
)

#: Staged columns a connector's SQL must produce (besides ``pos, raw, reason, detail`` and the
#: ``scope_<field>`` columns). Timestamps are TIMESTAMPTZ, lists are VARCHAR[], metadata is JSON text.
STAGED_COLUMNS = (
    "idempotency_key",
    "source_id",
    "type",
    "content",
    "role",
    "namespace",
    "source",
    "author",
    "channel",
    "user_id",
    "agent_id",
    "session_id",
    "priority",
    "status",
    "categories",
    "tags",
    "metadata",
    "observed_at",
    "created_at",
    "updated_at",
    "valid_from",
    "valid_to",
    "recorded_at",
    "superseded_at",
)


def run(
    system: str,
    inner_sql: str,
    shape: sources.RecordShape,
    fs: AbstractFileSystem,
    path: str,
    options: ReadOptions,
    *,
    envelope_prefix: dict[str, str] | None = None,
    expected: str,
) -> Iterator[Batch]:
    """Read one JSON dump (array, envelope object or JSON Lines) through a connector's SQL.

    ``envelope_prefix`` maps a top-level key of an envelope object to the ijson prefix of its
    records, e.g. ``{"results": "results.item"}``; an object with none of those keys is not a dump
    of this system and raises :class:`DumpFormatError` naming ``expected``.
    """
    uri = fs.unstrip_protocol(path)
    ingested_at = datetime.now(UTC)
    with fs.open(path, "rb") as f:
        packed = bounded.compression(f.read(8))
    if packed is not None:  # never split compressed bytes into "lines"
        raise DumpFormatError(uri, expected, f"a {packed} file; decompress it into the landing folder")
    head = sources.peek(fs, path)
    if head.shape == "empty":
        return
    if head.shape == "object":
        prefix = next((p for k, p in (envelope_prefix or {}).items() if k in head.first_keys), None)
        if prefix is None:
            keys = ", ".join(head.first_keys[:8]) or "no keys"
            raise DumpFormatError(uri, expected, f"a JSON object with keys: {keys}")
    runner = sources.SqlRunner(inner_sql, shape, options.batch_rows)
    unread: list[Unread] = []
    tables: Generator[tuple[pa.Table, pa.Table], None, None]
    if head.shape == "lines":
        tables = runner.over_chunks(sources.iter_json_lines(fs, path, batch_rows=options.batch_rows))
    elif head.shape == "array":
        tables = _array(runner, fs, path, head, options, unread)
    else:
        assert prefix is not None
        tables = runner.over_chunks(
            sources.iter_json_items(
                fs, path, prefix, batch_rows=options.batch_rows, bom=head.bom, unread=unread
            )
        )
    try:
        for staged, raw in tables:
            yield finish(pl.DataFrame(staged), raw, system, options, uri, ingested_at)
    finally:
        tables.close()  # release the readers before their DuckDB connection goes
        runner.close()
    if unread:
        yield unread_batch(unread)


def unread_batch(unread: list[Unread]) -> Batch:
    """A batch with no records that reports the bytes of the dump that were not read."""
    return Batch(EPISODE_SCHEMA.to_frame(), REJECT_SCHEMA.to_frame(), 0, tuple(unread))


def _array(
    runner: sources.SqlRunner,
    fs: AbstractFileSystem,
    path: str,
    head: sources.Peek,
    options: ReadOptions,
    unread: list[Unread],
) -> Generator[tuple[pa.Table, pa.Table], None, None]:
    """A JSON array: the fastest reader that can read it, each resuming where the last stopped.

    Typed DuckDB scan → DuckDB record split + per-record parse → ``jsonscan`` splitter (which
    rejects one record at a time and says where a broken document breaks; the bytes it could not
    read go to ``unread``).
    """
    consumed = 0
    if not head.bom:
        for tier in (runner.over_array_file, runner.over_array_objects):
            try:
                for staged, raw in tier(fs, path, start=consumed):
                    consumed += raw.num_rows
                    yield staged, raw
                return
            except sources.ScanError:
                continue
    yield from runner.over_chunks(
        sources.iter_json_items(
            fs, path, "item", batch_rows=options.batch_rows, bom=head.bom, start=consumed, unread=unread
        )
    )


def _scope_expr(template: str) -> tuple[pl.Expr, pl.Expr]:
    """The filled scope, and the name of the first placeholder that has no value (or null)."""
    pieces: list[pl.Expr] = []
    missing: pl.Expr = pl.lit(None, pl.String)
    rest = template
    for name in scope_placeholders(template):
        before, _, rest = rest.partition("{" + name + "}")
        col = pl.col(f"scope_{name}")
        pieces += [pl.lit(before), col]
        missing = (
            pl.when(missing.is_null() & (col.is_null() | (col == ""))).then(pl.lit(name)).otherwise(missing)
        )
    pieces.append(pl.lit(rest))
    return pl.concat_str(pieces), missing


def _too_deep(metadata: pl.Series) -> pl.Series:
    """Rows whose metadata (every source field no column took) nests deeper than the limit.

    Only texts with enough brackets to nest that deep are scanned, in Python: a few rows at most.
    """
    limit = MAX_DEPTH + 2  # the ``{"_source": {…}}`` wrapping adds two levels to the record's own
    candidates = metadata.str.count_matches(r"[\[{]").fill_null(0) > limit
    if not candidates.any():
        return candidates
    return pl.Series(
        [bool(c) and json_depth(text) > limit for c, text in zip(candidates, metadata, strict=True)]
    )


def json_depth(text: str) -> int:
    """How deep a JSON text nests (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


#: Go's zero time (``0001-01-01T00:00:00Z``) in microseconds since the epoch: what SQL casts of
#: Zep's (and other Go servers') unset times give. It is no time.
_GO_ZERO_US = (datetime(1, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _with_path_fields(staged: pl.DataFrame, options: ReadOptions) -> pl.DataFrame:
    """Values named in the dump's path fill the scope placeholders and identity columns of the
    same name where a record has none (``ReadOptions.path_fields``)."""
    fills = []
    for name, value in options.path_fields.items():
        for column in (f"scope_{name}", *([name] if name in PATH_IDENTITY else [])):
            if column in staged.columns:
                empty = pl.col(column).is_null() | (pl.col(column) == "")
                fills.append(pl.when(empty).then(pl.lit(value)).otherwise(pl.col(column)).alias(column))
            elif column.startswith("scope_"):
                fills.append(pl.lit(value, pl.String).alias(column))
    return staged.with_columns(fills) if fills else staged


def _without_zero_times(staged: pl.DataFrame) -> pl.DataFrame:
    """Every staged timestamp that is Go's zero time made null (the Python path's parser does the
    same; this covers the times a connector's SQL cast)."""
    times = [name for name, dtype in staged.schema.items() if isinstance(dtype, pl.Datetime)]
    return staged.with_columns(
        pl.when(pl.col(name).dt.epoch("us") == _GO_ZERO_US).then(None).otherwise(pl.col(name)).alias(name)
        for name in times
    )


def episode_id(tenant_id: str, system: str) -> pl.Expr:
    """``ep_`` + SHA-256 of (tenant, system, ``source_id``): the same source id in two tenants is
    two episodes. The tenant goes first with its UTF-8 length (``<n>:<tenant>``), so no tenant or
    source id, whatever characters it holds, can make two identities hash the same text.

    Before the tenant was part of it, the digest was of ``<system>\x1f<source_id>`` alone; the
    store chooses current versions by the identity columns, not by this id, so ids of either kind
    resolve per tenant (``pipelines.store.episodes.IDENTITY``).
    """
    prefix = f"{len(tenant_id.encode())}:{tenant_id}\x1f{system}\x1f"
    return pl.lit("ep_") + plh.concat_str(pl.lit(prefix), pl.col("source_id")).chash.sha2_256()


def finish(
    staged: pl.DataFrame,
    raw: pa.Table,
    system: str,
    options: ReadOptions,
    dump_uri: str,
    ingested_at: datetime,
) -> Batch:
    """Normalize one staged batch: fill the scope, run the shared checks, split off rejects."""
    missing_columns = [c for c in ("pos", "reason", "detail", *STAGED_COLUMNS) if c not in staged.columns]
    if missing_columns:  # a connector bug, not a data problem: say which column
        raise TypeError(f"{system} connector SQL does not produce {', '.join(missing_columns)}")
    scope, missing = _scope_expr(options.scope_template)
    staged = _with_path_fields(_without_zero_times(staged), options)
    staged = staged.with_columns(
        content_bytes=pl.col("content").str.len_bytes(),
        content_sha256=plh.col("content").chash.sha2_256(),
        episode_id=episode_id(options.tenant_id, system),
    )
    staged = staged.with_columns(too_deep=_too_deep(staged["metadata"]))
    checks: list[tuple[pl.Expr, RejectReason, pl.Expr]] = [
        (pl.col("source_id").is_null(), RejectReason.MISSING_FIELD, pl.lit("no record id")),
        (pl.col("content").is_null(), RejectReason.MISSING_FIELD, pl.lit("no content text")),
        (
            pl.col("observed_at").is_null(),
            RejectReason.MISSING_FIELD,
            pl.lit("no timestamp to use as observed_at"),
        ),
        (
            missing.is_not_null(),
            RejectReason.UNRESOLVED_SCOPE,
            pl.format(
                "scope template {} needs {{{}}}, which this record lacks",
                pl.lit(options.scope_template),
                missing,
            ),
        ),
        (
            pl.col("too_deep"),
            RejectReason.TOO_DEEP,
            pl.lit(f"the record nests deeper than {MAX_DEPTH} levels"),
        ),
        (
            pl.col("content_bytes") > MAX_CONTENT_BYTES,
            RejectReason.PAYLOAD_TOO_LARGE,
            pl.format("content is {} bytes; the limit is {}", "content_bytes", pl.lit(MAX_CONTENT_BYTES)),
        ),
        (
            ~pl.col("type").is_in(EPISODE_TYPES),
            RejectReason.UNKNOWN_TYPE,
            pl.format(
                "episode type {} is not one of " + "|".join(EPISODE_TYPES),
                pl.col("type").fill_null("null"),
            ),
        ),
        (
            pl.col("role").is_not_null() & ~pl.col("role").is_in(ROLES),
            RejectReason.BAD_VALUE,
            pl.format("role {} is not one of " + "|".join(ROLES), "role"),
        ),
        (
            pl.col("priority").is_not_null() & ~pl.col("priority").is_in(PRIORITIES),
            RejectReason.BAD_VALUE,
            pl.format("priority {} is not one of " + "|".join(PRIORITIES), "priority"),
        ),
    ]
    reason: pl.Expr = pl.col("reason")
    detail: pl.Expr = pl.col("detail")
    for cond, code, text in checks:
        fresh = reason.is_null() & cond.fill_null(False)
        reason = pl.when(fresh).then(pl.lit(code.value)).otherwise(reason)
        detail = pl.when(fresh).then(text).otherwise(detail)
    # The reasons for every row; the detail texts only for the (usually few) rejected rows.
    failed = pl.any_horizontal(pl.col("reason").is_not_null(), *(c.fill_null(False) for c, _, _ in checks))
    frame = staged.with_columns(scope=scope, failed=failed)
    has_rejects = bool(frame["failed"].any())
    accepted = (frame.filter(~pl.col("failed")) if has_rejects else frame).with_columns(
        tenant_id=pl.lit(options.tenant_id),
        source_system=pl.lit(system),
        dump_uri=pl.lit(dump_uri),
        dump_record=pl.col("pos"),
        ingested_at=pl.lit(ingested_at, dtype=EPISODE_SCHEMA["ingested_at"]),
        categories=pl.col("categories").fill_null(pl.lit([], pl.List(pl.String))),
        tags=pl.col("tags").fill_null(pl.lit([], pl.List(pl.String))),
        metadata=pl.col("metadata").fill_null("{}"),
    )
    episodes = accepted.select(pl.col(name).cast(dtype) for name, dtype in EPISODE_SCHEMA.items())
    if not has_rejects:
        return Batch(episodes=episodes, rejects=REJECT_SCHEMA.to_frame(), read=staged.height)
    rejected = frame.filter(pl.col("failed")).with_columns(reason=reason, detail=detail)
    rejects = (
        rejected.join(sources.record_text(raw, rejected["pos"].to_arrow()), on="pos", how="left")
        .select(
            tenant_id=pl.lit(options.tenant_id),
            source_system=pl.lit(system),
            dump_uri=pl.lit(dump_uri),
            dump_record=pl.col("pos"),
            reason=pl.col("reason"),
            detail=pl.col("detail"),
            raw=pl.col("raw"),
            ingested_at=pl.lit(ingested_at),
        )
        .cast(REJECT_SCHEMA)
    )
    return Batch(episodes=episodes, rejects=rejects, read=staged.height)
