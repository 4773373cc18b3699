"""Assets: one ingest asset per registered connector (from one factory), and the catalog."""

# No `from __future__ import annotations` here: Dagster reads these annotations at definition
# time to inject the context and resources, and cannot resolve them from strings.

from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
import polars as pl

# The one private name used: Dagster 1.13 has no public way to tie a check evaluation to the
# materialization of one partition of a multi-partition run, and an evaluation not tied to the
# partition's latest materialization shows as "not evaluated". Used in `_evaluation` only.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (  # noqa: TID251
    AssetCheckEvaluationTargetMaterializationData,
)
from pydantic import Field

from connectors import registry
from connectors.base import Connector
from connectors.schema import SKIP_REASONS
from pipelines.orchestration.partitions import dumps_partitions
from pipelines.orchestration.resources import (
    BackupResource,
    EpisodeStoreResource,
    ExportTarget,
    ImportSettings,
    LandingZone,
)
from pipelines.store import current, expected_rejects
from pipelines.store.catalog import build_catalog, cli_command
from pipelines.store.episodes import ImportResult, dump_relpath
from pipelines.store.expected_rejects import Expected
from pipelines.store.ingest_many import DumpOptions, ingest_dumps

#: Above this share of rejected records, the reject-rate check warns.
REJECT_RATE_WARN = 0.10
#: A backfill's runs take this many dumps each (Dagster's BackfillPolicy): the run's start-up (two
#: definition loads, seconds) is paid per run, not per dump.
MAX_DUMPS_PER_RUN = 50
#: Dumps a run reads at once (run config ``workers``); measured by ``make bench-backfill``.
INGEST_WORKERS = 2
INGEST_GROUP = "ingest"
_PREVIEW_COLUMNS = ("scope", "type", "role", "observed_at", "content")


def ingest_asset_key(system: str) -> dg.AssetKey:
    return dg.AssetKey(f"{system}_episodes")


def _preview_markdown(preview: pl.DataFrame) -> str:
    def cell(value: object) -> str:
        text = "" if value is None else str(value)
        text = text if len(text) <= 80 else text[:79] + "…"
        return text.replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(_PREVIEW_COLUMNS) + " |\n|" + "---|" * len(_PREVIEW_COLUMNS) + "\n"
    rows = preview.select(_PREVIEW_COLUMNS).iter_rows()
    return head + "".join("| " + " | ".join(cell(v) for v in row) + " |\n" for row in rows)


def _check_results(
    result: ImportResult, key: dg.AssetKey, expected: Expected | None = None
) -> list[dg.AssetCheckResult]:
    """The dump's two checks; each names the dump (``<system>/<path>``) in its metadata and text."""
    counts = result.counts
    dump = f"{result.manifest['source_system']}/{dump_relpath(result.manifest['dump_key'])}"
    by_reason: dict[str, int] = result.manifest["rejects_by_reason"]
    # Records skipped on purpose (e.g. ChatGPT's hidden system nodes) are not failures.
    real = {reason: n for reason, n in by_reason.items() if reason not in SKIP_REASONS}
    considered = counts["read"] - (counts["rejected"] - sum(real.values()))
    rate = sum(real.values()) / considered if considered else 0.0
    # Rejects the landing zone declares expected (the samples' broken-on-purpose records) are named
    # as such; only the ones beyond the declaration count against the threshold.
    unexpected = expected.unexpected(real) if expected else real
    unexpected_rate = sum(unexpected.values()) / considered if considered else 0.0
    passed_rate = unexpected_rate <= REJECT_RATE_WARN
    rejected = sum(real.values())
    skipped = {reason: n for reason, n in by_reason.items() if reason in SKIP_REASONS}
    if not rejected:
        text = f"{dump}: no record rejected."
    elif expected and not unexpected:
        text = (
            f"{dump}: {rejected} of {considered} records rejected ({rate:.0%}), all expected: "
            f"{expected.why} (declared in {expected.declared_in})."
        )
    else:
        surprise = ", ".join(f"{n} {reason}" for reason, n in sorted(unexpected.items()))
        text = (
            f"{dump}: {sum(unexpected.values())} of {considered} records rejected unexpectedly "
            f"({unexpected_rate:.0%}; {surprise}); threshold {REJECT_RATE_WARN:.0%}. "
            "See the catalog's rejects view for each record and its reason."
        )
    if skipped:
        text += (
            " Skipped on purpose, not counted: "
            + ", ".join(f"{n} {r}" for r, n in sorted(skipped.items()))
            + "."
        )
    balanced = counts["read"] == counts["accepted"] + counts["rejected"] + counts["duplicate"] and not (
        result.manifest.get("unread")
    )
    return [
        dg.AssetCheckResult(
            asset_key=key,
            check_name="accounting_balances",
            # Balanced means the whole dump was read: bytes not read into records fail it.
            passed=balanced,
            metadata={"dump": dg.MetadataValue.text(dump)}
            | {k: dg.MetadataValue.int(v) for k, v in counts.items()}
            | {"unread": dg.MetadataValue.json(result.manifest.get("unread", []))},
            description=f"{dump}: "
            + ("every record and byte accounted for." if balanced else "records or bytes unaccounted for."),
        ),
        dg.AssetCheckResult(
            asset_key=key,
            check_name="reject_rate",
            passed=passed_rate,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "dump": dg.MetadataValue.text(dump),
                "reject_rate": dg.MetadataValue.float(round(rate, 4)),
                "unexpected_reject_rate": dg.MetadataValue.float(round(unexpected_rate, 4)),
                "threshold": dg.MetadataValue.float(REJECT_RATE_WARN),
                "rejects_by_reason": dg.MetadataValue.json(real),
                "expected_rejects": dg.MetadataValue.json(expected.rejects if expected else {}),
            },
            description=text,
        ),
    ]


def _metadata(result: ImportResult, asset_rows: int) -> dict[str, dg.MetadataValue]:
    """One partition's materialization metadata."""
    m = result.manifest
    counts = result.counts
    files = m["files"]["episodes"] + m["files"]["rejects"]
    return {
        # the asset overview's "Row count": the asset's (every live dump of the system), not this dump's
        "dagster/row_count": dg.MetadataValue.int(asset_rows),
        "dagster/partition_row_count": dg.MetadataValue.int(counts["accepted"]),
        "records_read": dg.MetadataValue.int(counts["read"]),
        "accepted": dg.MetadataValue.int(counts["accepted"]),
        "rejected": dg.MetadataValue.int(counts["rejected"]),
        "duplicates": dg.MetadataValue.int(counts["duplicate"]),
        "rejects_by_reason": dg.MetadataValue.json(m["rejects_by_reason"]),
        "dump": dg.MetadataValue.path(m["dump_uri"]),
        "dump_bytes": dg.MetadataValue.int(m["dump_bytes"]),
        "dump_sha256": dg.MetadataValue.text(m["dump_sha256"]),
        "bytes_written": dg.MetadataValue.int(0 if result.skipped else sum(f["bytes"] for f in files)),
        "duration_s": dg.MetadataValue.float(m["duration_s"]),
        "ingest_id": dg.MetadataValue.text(m["ingest_id"]),
        "skipped_unchanged": dg.MetadataValue.bool(result.skipped),
        "preview": dg.MetadataValue.md(_preview_markdown(result.preview)),
    }


def _evaluation(
    context: dg.AssetExecutionContext, check: dg.AssetCheckResult, key: dg.AssetKey, partition: str
) -> dg.AssetCheckEvaluation:
    """``check`` as the evaluation of one partition, tied to that partition's new materialization
    (in a run of several partitions Dagster cannot tell an ``AssetCheckResult``'s partition)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    target = (
        AssetCheckEvaluationTargetMaterializationData(
            run_id=records[0].event_log_entry.run_id,
            storage_id=records[0].storage_id,
            timestamp=records[0].timestamp,
        )
        if records
        else None
    )
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=str(check.check_name),
        passed=check.passed,
        metadata=check.metadata,
        target_materialization_data=target,
        severity=check.severity,
        description=check.description,
        blocking=False,
        partition=partition,
    )


class IngestConfig(dg.Config):
    """Run config of an ingest asset."""

    #: Import the dump even if its bytes are those of its live import (by default it is skipped).
    force: bool = False
    #: Dumps read at once in a run of several partitions (a backfill); big dumps are read alone.
    workers: int = Field(default=INGEST_WORKERS, ge=1, le=8)


def build_ingest_asset(connector: Connector) -> dg.AssetsDefinition:
    system = connector.name
    key = ingest_asset_key(system)
    partitions = dumps_partitions(system)

    @dg.asset(
        key=key,
        group_name=INGEST_GROUP,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_DUMPS_PER_RUN),
        description=(
            f"{connector.description}\n\nOne partition per dump file in "
            f"`<landing>/{system}/`. Each materialization writes the dump's episodes and rejects "
            "to the store as a new, atomically committed version of its partition. A backfill "
            f"ingests up to {MAX_DUMPS_PER_RUN} dumps per run, each committed (or failed) on its own."
        ),
        kinds={"parquet", "polars", "duckdb"},
        check_specs=[
            dg.AssetCheckSpec(
                "accounting_balances",
                asset=key,
                partitions_def=partitions,
                description="read = accepted + rejected + duplicate, and no byte of the dump unread",
            ),
            dg.AssetCheckSpec(
                "reject_rate",
                asset=key,
                partitions_def=partitions,
                description=(
                    f"at most {REJECT_RATE_WARN:.0%} of the dump's records rejected, beyond those "
                    "the landing zone's expected_rejects.yaml declares"
                ),
            ),
        ],
        metadata={"connector_version": connector.version},
    )
    def _ingest(
        context: dg.AssetExecutionContext,
        config: IngestConfig,
        landing: LandingZone,
        episode_store: EpisodeStoreResource,
        import_settings: ImportSettings,
    ) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.Output[None]]:
        keys = list(context.partition_keys)
        location, store = landing.location(), episode_store.store()
        expected = expected_rejects.load(location)

        def options(relpath: str) -> DumpOptions:
            return DumpOptions(
                tenant_id=import_settings.tenant_id,
                scope_template=import_settings.scope_template(system, relpath),
                path_fields=import_settings.path_fields(system, relpath),
            )

        done: dict[str, ImportResult] = {}
        failed: dict[str, BaseException] = {}
        outcomes = ingest_dumps(
            store,
            location,
            system,
            keys,
            options,
            workers=config.workers,
            force=config.force,
            log=context.log.info,
        )
        for i, outcome in enumerate(outcomes, 1):
            where = f"[{i}/{len(keys)}] {outcome.relpath}" if len(keys) > 1 else outcome.relpath
            if outcome.error is not None:
                failed[outcome.relpath] = outcome.error
                context.log.error(f"{where}: FAILED: {type(outcome.error).__name__}: {outcome.error}")
                continue
            result = outcome.result
            assert result is not None, "an outcome without an error has a result"
            done[outcome.relpath] = result
            if result.skipped:
                context.log.info(
                    f"{where}: unchanged since import {result.manifest['ingest_id']}, not read again"
                )
            else:
                context.log.info(f"{where}: {result.counts} in {result.manifest['duration_s']} s")
        if len(keys) == 1 and failed:
            raise failed[keys[0]]  # one dump: its own error, as it was raised
        rows = store.live_rows(system) if done else 0
        checks = {k: _check_results(r, key, expected.get(system, k)) for k, r in done.items()}
        if failed:
            # Record what was committed, then fail the run naming the dumps that were not: a ranged
            # run's partitions without a materialization are the backfill's failed ones.
            for relpath, result in done.items():
                yield dg.AssetMaterialization(
                    asset_key=key, partition=relpath, metadata=_metadata(result, rows)
                )
        else:
            for relpath, result in done.items():
                context.add_asset_metadata(_metadata(result, rows), partition_key=relpath)
            yield dg.MaterializeResult()
        selected = context.selected_asset_check_keys
        if not failed:  # the checks' outputs (nothing): once per run, their evaluations per dump
            for check_key in selected:
                yield dg.Output(
                    None, output_name=context.assets_def.get_output_name_for_asset_check_key(check_key)
                )
        for relpath, results in checks.items():
            for check in results:
                if dg.AssetCheckKey(key, str(check.check_name)) in selected:
                    yield _evaluation(context, check, key, relpath)
        if failed:
            raise dg.Failure(
                description=_failures_text(system, failed, len(done)),
                metadata={
                    "failed_dumps": dg.MetadataValue.json(sorted(failed)),
                    # each failed dump's own error, for `memport run`'s line per dump
                    "errors": dg.MetadataValue.json(
                        {k: f"{type(e).__name__}: {e}" for k, e in sorted(failed.items())}
                    ),
                },
            )

    return _ingest


def _failures_text(system: str, failed: dict[str, BaseException], committed: int) -> str:
    lines = [
        f"{len(failed)} of {len(failed) + committed} dumps failed; the other {committed} are committed "
        "and materialized. Fix these and re-run their partitions (the backfill's failed partitions):"
    ]
    lines += [
        f"  {system}/{relpath}: {type(error).__name__}: {error}" for relpath, error in sorted(failed.items())
    ]
    return "\n".join(lines)


INGEST_ASSETS = [build_ingest_asset(c) for c in registry.CONNECTORS.values()]

#: When the catalog refreshes: once some dump was ingested since it was last requested or built, and
#: no ingest (run or backfill, queued or running) is still in flight. However the dumps were
#: ingested (asset backfill, job backfill, landing sensor, a launch from the lineage view), a
#: backfill of 500 dumps is one refresh after its last run, not 500. A dump that failed or was never
#: ingested does not hold it back (unlike ``eager()``, which waits for every partition to exist).
#: A run that also builds the catalog (``memport run``, or the lineage view with both selected)
#: leaves nothing to do. The ``catalog_automation`` sensor evaluates it.
CATALOG_AUTOMATION = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after_ingest")


@dg.asset(
    group_name="catalog",
    deps=[a.key for a in INGEST_ASSETS],
    kinds={"duckdb"},
    automation_condition=CATALOG_AUTOMATION,
    description=(
        "The DuckDB catalog analysts open: views episodes, episode_log, rejects, imports, exports, "
        "snapshots and the "
        "macro episodes_as_of(ts) over the store's live files. Rebuilt in a new file and swapped "
        "in atomically, so open analyst sessions never block it. Also vacuums data files that no "
        "live partition names, after the grace period."
    ),
)
def episode_catalog(
    context: dg.AssetExecutionContext,
    episode_store: EpisodeStoreResource,
    export_target: ExportTarget,
    backup: BackupResource,
) -> dg.MaterializeResult:
    store = episode_store.store()
    summary = build_catalog(
        store, episode_store.catalog_path, exports=export_target.location(), backup=backup.location()
    )
    if summary.note:
        context.log.warning(f"catalog: {summary.note}")
    grace = timedelta(hours=episode_store.vacuum_grace_hours)
    removed = store.vacuum(grace=grace) + current.vacuum(store, grace=grace)
    context.log.info(
        f"catalog {summary.path}: {summary.episodes:,} episodes; vacuumed {len(removed)} unreferenced file(s)"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(summary.episodes),
            "path": dg.MetadataValue.path(str(summary.path)),
            "partitions": dg.MetadataValue.int(summary.partitions),
            "episode_files": dg.MetadataValue.int(summary.episode_files),
            "episodes": dg.MetadataValue.int(summary.episodes),
            "episode_versions": dg.MetadataValue.int(summary.episode_versions),
            "rejects": dg.MetadataValue.int(summary.rejects),
            "files_vacuumed": dg.MetadataValue.int(len(removed)),
            "query": dg.MetadataValue.md(
                f"```\n{cli_command(summary.path)}\n"
                "SELECT source_system, type, count(*) FROM episodes GROUP BY ALL;\n```"
            ),
        }
    )
