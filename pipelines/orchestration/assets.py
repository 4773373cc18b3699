"""Assets: one ingest asset per registered connector (from one factory), and the catalog."""

# No `from __future__ import annotations` here: Dagster reads these annotations at definition
# time to inject the context and resources, and cannot resolve them from strings.

import shlex
from datetime import timedelta

import dagster as dg
import polars as pl

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
from pipelines.store import current
from pipelines.store.catalog import build_catalog
from pipelines.store.episodes import ImportResult
from pipelines.store.ingest import ingest_dump

#: Above this share of rejected records, the reject-rate check warns.
REJECT_RATE_WARN = 0.10
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


def _check_results(result: ImportResult, key: dg.AssetKey) -> list[dg.AssetCheckResult]:
    counts = result.counts
    # Records skipped on purpose (e.g. ChatGPT's hidden system nodes) are not failures.
    skipped = sum(n for reason, n in result.manifest["rejects_by_reason"].items() if reason in SKIP_REASONS)
    considered = counts["read"] - skipped
    rate = (counts["rejected"] - skipped) / considered if considered else 0.0
    return [
        dg.AssetCheckResult(
            asset_key=key,
            check_name="accounting_balances",
            # Balanced means the whole dump was read: bytes not read into records fail it.
            passed=counts["read"] == counts["accepted"] + counts["rejected"] + counts["duplicate"]
            and not result.manifest.get("unread"),
            metadata={k: dg.MetadataValue.int(v) for k, v in counts.items()}
            | {"unread": dg.MetadataValue.json(result.manifest.get("unread", []))},
        ),
        dg.AssetCheckResult(
            asset_key=key,
            check_name="reject_rate",
            passed=rate <= REJECT_RATE_WARN,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "reject_rate": dg.MetadataValue.float(round(rate, 4)),
                "threshold": dg.MetadataValue.float(REJECT_RATE_WARN),
            },
            description="Share of the dump's records that were rejected (see the rejects view).",
        ),
    ]


class IngestConfig(dg.Config):
    """Run config of an ingest asset."""

    #: Import the dump even if its bytes are those of its live import (by default it is skipped).
    force: bool = False


def build_ingest_asset(connector: Connector) -> dg.AssetsDefinition:
    system = connector.name
    key = ingest_asset_key(system)

    @dg.asset(
        key=key,
        group_name=INGEST_GROUP,
        partitions_def=dumps_partitions(system),
        description=(
            f"{connector.description}\n\nOne partition per dump file in "
            f"`<landing>/{system}/`. Each materialization writes the dump's episodes and rejects "
            "to the store as a new, atomically committed version of its partition."
        ),
        kinds={"parquet", "polars", "duckdb"},
        check_specs=[
            dg.AssetCheckSpec(
                "accounting_balances",
                asset=key,
                description="read = accepted + rejected + duplicate, and no byte of the dump unread",
            ),
            dg.AssetCheckSpec(
                "reject_rate",
                asset=key,
                description=f"at most {REJECT_RATE_WARN:.0%} of records rejected",
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
    ) -> dg.MaterializeResult:
        relpath = context.partition_key
        state = {"next_log": 0}

        def progress(read: int, accepted: int, rejected: int) -> None:
            if read >= state["next_log"]:
                context.log.info(
                    f"{relpath}: read {read:,} records ({accepted:,} accepted, {rejected:,} rejected so far)"
                )
                state["next_log"] = read + 250_000

        result = ingest_dump(
            episode_store.store(),
            landing.location(),
            system,
            relpath,
            tenant_id=import_settings.tenant_id,
            scope_template=import_settings.scope_template(system, relpath),
            path_fields=import_settings.path_fields(system, relpath),
            progress=progress,
            force=config.force,
        )
        m = result.manifest
        counts = result.counts
        if result.skipped:
            context.log.info(f"{relpath}: unchanged since import {m['ingest_id']}, not read again")
        else:
            context.log.info(f"{relpath}: {counts} in {m['duration_s']} s")
        files = m["files"]["episodes"] + m["files"]["rejects"]
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(counts["accepted"]),
                "records_read": dg.MetadataValue.int(counts["read"]),
                "accepted": dg.MetadataValue.int(counts["accepted"]),
                "rejected": dg.MetadataValue.int(counts["rejected"]),
                "duplicates": dg.MetadataValue.int(counts["duplicate"]),
                "rejects_by_reason": dg.MetadataValue.json(m["rejects_by_reason"]),
                "dump": dg.MetadataValue.path(m["dump_uri"]),
                "dump_bytes": dg.MetadataValue.int(m["dump_bytes"]),
                "dump_sha256": dg.MetadataValue.text(m["dump_sha256"]),
                "bytes_written": dg.MetadataValue.int(
                    0 if result.skipped else sum(f["bytes"] for f in files)
                ),
                "duration_s": dg.MetadataValue.float(m["duration_s"]),
                "ingest_id": dg.MetadataValue.text(m["ingest_id"]),
                "skipped_unchanged": dg.MetadataValue.bool(result.skipped),
                "preview": dg.MetadataValue.md(_preview_markdown(result.preview)),
            },
            check_results=_check_results(result, key),
        )

    return _ingest


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
                f"```\nduckdb -readonly {shlex.quote(str(summary.path))}\n"
                "SELECT source_system, type, count(*) FROM episodes GROUP BY ALL;\n```"
            ),
        }
    )
