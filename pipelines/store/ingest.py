"""Ingest: one dump in the landing zone → one committed partition of the episode store.

Plain Python, the one code path the Dagster assets, the command line and the benchmark share.

Symbolic links are never followed out of the landing zone: whoever can drop a file there must not
make memport read ``/etc/passwd`` (and quote its first line in an error). A link is read only when
its target resolves inside the landing zone; a linked folder is not walked into (no loops, no
dump found twice), and one that leads out is listed so that its refusal is visible.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

from connectors import registry
from connectors.base import DEFAULT_BATCH_ROWS
from connectors.errors import ConfigError
from connectors.schema import EPISODE_SCHEMA
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
    for path in _local_files(landing, base) if landing.is_local else landing.fs.find(base):
        rel = path[len(base) + 1 :]
        parts = rel.split("/")
        if any(p.startswith(_IGNORED_PREFIXES) for p in parts) or rel.endswith(_IGNORED_SUFFIXES):
            continue
        found.append(rel)
    return sorted(found)


def _local_files(landing: Location, base: str) -> list[str]:
    """Files under ``base``, links to files included; linked folders only when they lead out."""
    found, stack = [], [base]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                linked_file = entry.is_symlink() and entry.is_file()
                if entry.is_file(follow_symlinks=False) or linked_file or _outside(landing, entry.path):
                    found.append(entry.path)
    return found


def _outside(landing: Location, path: str) -> bool:
    root = os.path.realpath(landing.root)
    return os.path.commonpath([root, os.path.realpath(path)]) != root


def _checked_path(landing: Location, system: str, relpath: str) -> str:
    """The path to read for ``relpath``: inside the landing zone, with links resolved."""
    path = landing.path(system, relpath)
    where = f"dump {landing.uri(path)} (system {system}, key {relpath!r})"
    if ".." in relpath.split("/") or relpath.startswith("/"):
        raise ConfigError(f"{where}: a dump key is a path inside the landing zone; '..' is not allowed")
    if not landing.is_local:
        return path
    if _outside(landing, path):
        # the target is not named: the link's owner knows it, the event log need not
        raise ConfigError(
            f"{where} is a symbolic link (or lies under one) that resolves outside the landing zone "
            f"{landing.url()}; memport does not follow links out of it. Copy the file into the "
            "landing zone instead."
        )
    return os.path.realpath(path)


def unchanged_since_import(
    store: EpisodeStore, landing: Location, system: str, relpath: str, tenant_id: str, template: str
) -> dict[str, Any] | None:
    """The live import manifest of the dump if importing it again would give the same partition."""
    live = store.live_manifest(system, dump_key(relpath), tenant_id)
    if live is None or live["scope_template"] != template:
        return None
    if live["connector_version"] != registry.get(system).version:
        return None
    path = _checked_path(landing, system, relpath)
    if landing.fs.size(path) != live["dump_bytes"]:  # cheap first: most changed dumps change size
        return None
    digest = hashlib.sha256()
    with landing.fs.open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return live if digest.hexdigest() == live["dump_sha256"] else None


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
    force: bool = False,
    path_fields: Mapping[str, str] | None = None,
) -> ImportResult:
    """Read ``<landing>/<system>/<relpath>`` with the system's connector and commit it.

    ``path_fields``: values named in the dump's path (a ``MEMPORT_SCOPE_TEMPLATES`` glob's
    ``{name}`` parts) for the scope template and the records that lack them.

    A dump whose bytes (size, then sha256) are those of its live import, imported with the same
    tenant, scope template and connector version, is not read again: the result is that import,
    with ``skipped`` set. ``force`` re-imports it anyway.
    """
    connector = registry.get(system)
    path = _checked_path(landing, system, relpath)
    if not landing.fs.isfile(path):
        raise ConfigError(
            f"dump {landing.uri(path)} does not exist (system {system}, key {relpath!r}); "
            "it may have been moved or deleted since it was discovered"
        )
    template = scope_template or connector.default_scope_template
    if not force and (live := unchanged_since_import(store, landing, system, relpath, tenant_id, template)):
        return ImportResult(live, EPISODE_SCHEMA.to_frame(), skipped=True)
    dump = DumpInfo(
        uri=landing.fs.unstrip_protocol(path),
        source_system=system,
        key=dump_key(relpath),
        connector_version=connector.version,
        tenant_id=tenant_id,
        scope_template=template,
    )
    batches = connector.read(
        landing.fs,
        path,
        tenant_id=tenant_id,
        scope_template=template,
        batch_rows=batch_rows,
        path_fields=path_fields,
    )
    return store.ingest(dump, batches, dump_fs=landing.fs, progress=progress)
