"""Ingest: one dump in the landing zone → one committed partition of the episode store.

Plain Python, the one code path the Dagster assets, the command line and the benchmark share.
"""

from __future__ import annotations

from connectors import registry
from connectors.base import DEFAULT_BATCH_ROWS
from connectors.errors import ConfigError
from pipelines.store.episodes import DumpInfo, EpisodeStore, ImportResult, Progress, dump_key
from pipelines.store.locations import Location

_IGNORED_PREFIXES = (".", "_", "~")
_IGNORED_SUFFIXES = (".tmp", ".part", ".crdownload", "~")


def discover_dumps(landing: Location, system: str) -> list[str]:
    """Dump files under ``<landing>/<system>/``, as paths relative to that folder, sorted.

    Hidden files and files still being written (``.tmp``, ``.part``…) are not dumps yet.
    """
    base = landing.path(system)
    if not landing.fs.exists(base):
        return []
    found = []
    for path in landing.fs.find(base):
        rel = path[len(base) + 1 :]
        parts = rel.split("/")
        if any(p.startswith(_IGNORED_PREFIXES) for p in parts) or rel.endswith(_IGNORED_SUFFIXES):
            continue
        found.append(rel)
    return sorted(found)


def ingest_dump(
    store: EpisodeStore,
    landing: Location,
    system: str,
    relpath: str,
    *,
    tenant_id: str,
    scope_template: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: Progress | None = None,
) -> ImportResult:
    """Read ``<landing>/<system>/<relpath>`` with the system's connector and commit it."""
    connector = registry.get(system)
    path = landing.path(system, relpath)
    if not landing.fs.isfile(path):
        raise ConfigError(
            f"dump {landing.uri(path)} does not exist (system {system}, key {relpath!r}); "
            "it may have been moved or deleted since it was discovered"
        )
    template = scope_template or connector.default_scope_template
    dump = DumpInfo(
        uri=landing.fs.unstrip_protocol(path),
        source_system=system,
        key=dump_key(relpath),
        connector_version=connector.version,
        tenant_id=tenant_id,
        scope_template=template,
    )
    batches = connector.read(
        landing.fs, path, tenant_id=tenant_id, scope_template=template, batch_rows=batch_rows
    )
    return store.ingest(dump, batches, dump_fs=landing.fs, progress=progress)
