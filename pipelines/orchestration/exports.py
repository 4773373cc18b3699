"""Exports in Dagster: the named specs as an asset on a schedule, ad-hoc exports with typed run
config (the launchpad and ``memport export``), and the expiry schedule."""

# No `from __future__ import annotations` here: Dagster reads these annotations at definition
# time to inject the context and resources, and cannot resolve them from strings.

import time
from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeAlias

import dagster as dg
from pydantic import Field

from connectors.schema import EPISODE_TYPES, PRIORITIES, SOURCE_SYSTEMS
from pipelines.exports import lifecycle
from pipelines.exports.request import (
    COMPRESSIONS,
    DEFAULT_TTL_HOURS,
    FORMATS,
    KNOWN_KEYS,
    MAX_CATEGORIES,
    MIN_PART_BYTES,
    PROFILES,
    ExportRequest,
)
from pipelines.exports.specs import load_specs
from pipelines.orchestration.resources import (
    BackupResource,
    EpisodeStoreResource,
    ExportProgress,
    ExportTarget,
    ImportSettings,
)
from pipelines.store.catalog import build_catalog

EXPORT_GROUP = "exports"


def _choices(name: str, values: Iterable[str]) -> type[StrEnum]:
    """A config enum of the allowed ``values`` (each member named by its value, which the launchpad
    shows in a drop-down and accepts). The name lists them, so Dagster's error for a wrong value,
    given at launch before any work, says what is allowed: ``not in enum type
    ExportFormat[json, ndjson, csv, markdown] got parquet``."""
    values = tuple(values)
    members = [(v, v) for v in values]
    return StrEnum(f"{name}[{', '.join(values)}]", members)  # type: ignore[return-value]


# The allowed values come from the request parser's lists (one source of truth); the type checker
# sees the strings they are (a StrEnum is a str).
if TYPE_CHECKING:
    ExportFormat: TypeAlias = str
    Profile: TypeAlias = str
    Compression: TypeAlias = str
    EpisodeType: TypeAlias = str
    SourceSystem: TypeAlias = str
    Priority: TypeAlias = str
else:
    ExportFormat = _choices("ExportFormat", FORMATS)
    Profile = _choices("Profile", PROFILES)
    Compression = _choices("Compression", COMPRESSIONS)
    EpisodeType = _choices("EpisodeType", EPISODE_TYPES)
    SourceSystem = _choices("SourceSystem", SOURCE_SYSTEMS)
    Priority = _choices("Priority", PRIORITIES)


def _about(text: str, values: Iterable[str] | None = None) -> Any:
    """An optional field (default None) with its launchpad help."""
    return Field(default=None, description=text + (f" One of: {', '.join(values)}." if values else ""))


def _about_default(default: object, text: str) -> Any:
    return Field(default=default, description=text)


class ExportRunConfig(dg.Config):
    """An ad-hoc export request: the same fields as a spec in the YAML file (see README)."""

    format: ExportFormat = Field(description=f"The file format (required). One of: {', '.join(FORMATS)}.")
    tenant_id: str | None = _about("Tenant to export; default MEMPORT_TENANT_ID; '*' for every tenant.")
    scope: str | None = _about("Scope prefix on the hierarchy, e.g. org:acme (includes org:acme/...).")
    namespace: str | None = _about("Only this namespace.")
    types: list[EpisodeType] = Field(
        default=[], description=f"Episode types, any of. Each one of: {', '.join(EPISODE_TYPES)}."
    )
    source_system: SourceSystem | None = _about("Only episodes from this system.", SOURCE_SYSTEMS)
    user_id: str | None = _about("Only this user_id.")
    agent_id: str | None = _about("Only this agent_id.")
    session_id: str | None = _about("Only this session_id.")
    priority: Priority | None = _about("Only this priority.", PRIORITIES)
    categories: list[str] = Field(default=[], description=f"Categories, any of (at most {MAX_CATEGORIES}).")
    tags: list[str] = Field(default=[], description="Tags, all of.")
    metadata: dict[str, Any] = Field(
        default={}, description="Top-level metadata containment, e.g. {lang: en}."
    )
    created_after: str | None = _about("ISO 8601; naive is UTC, a bare date is midnight UTC.")
    created_after_ms: int | None = _about("Epoch milliseconds (instead of created_after).")
    created_before: str | None = _about("ISO 8601; naive is UTC, a bare date is midnight UTC.")
    created_before_ms: int | None = _about("Epoch milliseconds (instead of created_before).")
    observed_start_us: int | None = _about("Observed time from, in microseconds since the epoch.")
    observed_end_us: int | None = _about("Observed time to (inclusive), in microseconds since the epoch.")
    as_of: str | None = _about("ISO 8601: the episodes valid and known at that instant.")
    as_of_ms: int | None = _about("Epoch milliseconds (instead of as_of).")
    include_superseded: bool = _about_default(False, "Also superseded versions.")
    include_deleted: bool = _about_default(False, "Also deleted episodes (tombstones).")
    destination: str | None = _about("Directory URL for the files; default <MEMPORT_EXPORTS_URL>/<id>/.")
    profile: Profile | None = _about(
        "A peer-shaped layout: "
        + ", ".join(f"{p} (written as {f})" for p, f in PROFILES.items())
        + "; format must match.",
        PROFILES,
    )
    compression: Compression | None = _about("Compress the files (markdown: gzip only).", COMPRESSIONS)
    max_part_bytes: int | None = _about(
        f"Split into numbered parts of about this size (>= {MIN_PART_BYTES})."
    )
    neutralize_formulas: bool = _about_default(
        True, "csv only: prefix ' to cells a spreadsheet would run as a formula."
    )
    ttl_hours: float = _about_default(DEFAULT_TTL_HOURS, "Hours until the export's files are deleted.")
    name: str | None = _about("A label (the exports view; file names use its slug).")

    def request(self, default_tenant: str) -> ExportRequest:
        given = {k: v for k, v in self.model_dump(mode="json").items() if v not in (None, [], {})}
        if self.format != "csv" and self.neutralize_formulas:
            given.pop("neutralize_formulas")
        return ExportRequest.parse({"tenant_id": default_tenant} | given)


assert set(ExportRunConfig.model_fields) == KNOWN_KEYS, "the launchpad config mirrors the request"


def _metadata(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "export_id": dg.MetadataValue.text(m["id"]),
        "status": dg.MetadataValue.text(m["status"]),
        "dagster/row_count": dg.MetadataValue.int(m["rows"] or 0),
        "destination": dg.MetadataValue.path(m["destination"]),
        "files": dg.MetadataValue.json(m["files"]),
        "bytes": dg.MetadataValue.int(sum(f["bytes"] for f in m["files"])),
        "duration_s": dg.MetadataValue.float(m["duration_s"] or 0.0),
        **({"error": dg.MetadataValue.text(m["error"])} if m["error"] else {}),
    }


def _logging_progress(context: Any, label: str, extra: ExportProgress) -> Any:
    state = {"next": 0.0}

    def report(rows: int, total: int) -> None:
        if extra.report is not None:
            extra.report(rows, total)
        if time.monotonic() >= state["next"] or rows == total:
            context.log.info(f"{label}: {rows:,} / {total:,} rows written")
            state["next"] = time.monotonic() + 10

    return report


class ExportSpecsConfig(dg.Config):
    """Run config of ``episode_exports``."""

    #: Rebuild the catalog afterwards, so its ``exports`` view lists them (``memport run`` builds it
    #: once, after its snapshot, and turns this off).
    refresh_catalog: bool = True


@dg.asset(
    group_name=EXPORT_GROUP,
    deps=["episode_catalog"],
    kinds={"duckdb", "json", "csv"},
    description=(
        "Every named export spec (the YAML file at MEMPORT_EXPORT_SPECS; the samples shipped in "
        "pipelines/exports/specs.yaml by default), each written to <MEMPORT_EXPORTS_URL>/<id>/ with "
        "its manifest. The catalog is rebuilt afterwards so its `exports` view lists them."
    ),
)
def episode_exports(
    context: dg.AssetExecutionContext,
    config: ExportSpecsConfig,
    episode_store: EpisodeStoreResource,
    export_target: ExportTarget,
    import_settings: ImportSettings,
    export_progress: dg.ResourceParam[ExportProgress],
    backup: BackupResource,
) -> dg.MaterializeResult:
    requests = load_specs(export_target.specs_path, default_tenant=import_settings.tenant_id)
    store, exports = episode_store.store(), export_target.location()
    done = []
    for request in requests:
        m = lifecycle.export(
            store, exports, request, progress=_logging_progress(context, str(request.name), export_progress)
        )
        context.log.info(f"export {request.name}: {m['status']} {m['rows']} rows → {m['destination']}")
        done.append(m)
    if config.refresh_catalog:
        build_catalog(store, episode_store.catalog_path, exports=exports, backup=backup.location())
    failed = [m for m in done if m["status"] != lifecycle.READY]
    if failed:
        raise dg.Failure(
            f"{len(failed)} export spec(s) failed: "
            + "; ".join(f"{m['name']}: {m['error']}" for m in failed),
            metadata={"failed": dg.MetadataValue.json({m["name"]: m["error"] for m in failed})},
        )
    table = "| spec | id | format | rows | files |\n|---|---|---|---|---|\n" + "".join(
        f"| {m['name']} | {m['id']} | {m['format']}{'/' + m['profile'] if m['profile'] else ''} | "
        f"{m['rows']:,} | {', '.join(f['name'] for f in m['files'])} |\n"
        for m in done
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(sum(m["rows"] for m in done)),
            "exports": dg.MetadataValue.md(table),
            "export_ids": dg.MetadataValue.json({m["name"]: m["id"] for m in done}),
            "exports_url": dg.MetadataValue.path(exports.url()),
        }
    )


@dg.op(description="Run one export request (typed run config) and refresh the catalog's exports view.")
def run_export(
    context: dg.OpExecutionContext,
    config: ExportRunConfig,
    episode_store: EpisodeStoreResource,
    export_target: ExportTarget,
    import_settings: ImportSettings,
    export_progress: dg.ResourceParam[ExportProgress],
    backup: BackupResource,
) -> dg.Output[str]:
    request = config.request(import_settings.tenant_id)
    store, exports = episode_store.store(), export_target.location()
    pending = lifecycle.submit(exports, request)
    context.log.info(f"export {pending['id']}: PENDING → {pending['destination']}")
    m = lifecycle.run(
        store, exports, pending, progress=_logging_progress(context, pending["id"], export_progress)
    )
    build_catalog(store, episode_store.catalog_path, exports=exports, backup=backup.location())
    if m["status"] != lifecycle.READY:
        raise dg.Failure(f"export {m['id']} FAILED: {m['error']}", metadata=_metadata(m))
    return dg.Output(m["id"], metadata=_metadata(m))


@dg.job(description="An ad-hoc export: fill in the request in the launchpad (format, filters, destination).")
def adhoc_export() -> None:
    run_export()


@dg.op(description="Delete the files of exports past their time-to-live and mark them EXPIRED.")
def expire_old_exports(
    context: dg.OpExecutionContext,
    episode_store: EpisodeStoreResource,
    export_target: ExportTarget,
    backup: BackupResource,
) -> dg.Output[list[str]]:
    exports = export_target.location()
    expired = lifecycle.expire(exports)
    if expired:
        build_catalog(
            episode_store.store(), episode_store.catalog_path, exports=exports, backup=backup.location()
        )
    context.log.info(f"expired {len(expired)} export(s)")
    return dg.Output(expired, metadata={"expired": dg.MetadataValue.int(len(expired))})


@dg.job(description="Expire exports past their time-to-live (files deleted, manifest kept as EXPIRED).")
def expire_exports() -> None:
    expire_old_exports()


export_specs_job = dg.define_asset_job(
    "export_specs",
    selection=dg.AssetSelection.assets(episode_exports),
    description="Materialize every named export spec.",
)

export_specs_schedule = dg.ScheduleDefinition(
    name="export_specs_schedule",
    job=export_specs_job,
    cron_schedule="0 6 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 06:00 UTC: every named export spec.",
)

expire_exports_schedule = dg.ScheduleDefinition(
    name="expire_exports_schedule",
    job=expire_exports,
    cron_schedule="15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: expire exports past their time-to-live.",
)
