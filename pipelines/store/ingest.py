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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
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
    return sorted(rel for rel, _, _ in _dump_entries(landing, system))


def _dump_entries(landing: Location, system: str) -> list[tuple[str, str, Mapping[str, Any] | None]]:
    """(relative path, path, listing metadata on object stores) of each dump under ``<system>/``."""
    base = landing.path(system)
    if not landing.fs.exists(base):
        return []
    listed: Mapping[str, Mapping[str, Any] | None] = (
        dict.fromkeys(_local_files(landing, base)) if landing.is_local else landing.fs.find(base, detail=True)
    )
    found = []
    for path, info in listed.items():
        rel = path[len(base) + 1 :]
        parts = rel.split("/")
        if any(p.startswith(_IGNORED_PREFIXES) for p in parts) or rel.endswith(_IGNORED_SUFFIXES):
            continue
        found.append((rel, path, info))
    return found


@dataclass(frozen=True)
class DumpFingerprint:
    """What a dump looks like without reading it: size, modification time (epoch seconds) and, where
    the filesystem gives one, a tag that changes with the content or the file (S3 ETag, GCS/Azure
    checksum or etag, the local inode: a file replaced by rename is a new file)."""

    size: int
    modified: float | None
    tag: str = ""

    def text(self) -> str:
        when = "?" if self.modified is None else datetime.fromtimestamp(self.modified, UTC).isoformat()
        return f"{self.size} bytes, modified {when}" + (f", {self.tag}" if self.tag else "")

    def digest(self) -> str:
        """16 hex characters: short enough to keep one per dump in a sensor cursor."""
        return hashlib.blake2b(self.text().encode(), digest_size=8).hexdigest()


def dump_fingerprints(landing: Location, system: str) -> dict[str, DumpFingerprint]:
    """Each dump's fingerprint (see :func:`discover_dumps`), from the listing's metadata: one listing
    on object stores, one ``stat`` per file on local disk; no dump is opened."""
    found = {}
    for rel, path, info in _dump_entries(landing, system):
        try:
            found[rel] = _local_fingerprint(landing, path) if info is None else _remote_fingerprint(info)
        except FileNotFoundError:  # removed between the listing and its stat: not a dump now
            continue
    return found


def _local_fingerprint(landing: Location, path: str) -> DumpFingerprint:
    # a link leading out of the landing zone is described, never its target (it fails at ingest)
    st = Path(path).lstat() if _outside(landing, path) else Path(path).stat()
    return DumpFingerprint(st.st_size, st.st_mtime_ns / 1e9, f"inode {st.st_dev}:{st.st_ino}")


_MODIFIED_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")
_TAG_KEYS = ("ETag", "etag", "md5Hash", "crc32c", "content_md5", "checksum", "VersionId", "generation")


def _remote_fingerprint(info: Mapping[str, Any]) -> DumpFingerprint:
    modified = next((_epoch(info[k]) for k in _MODIFIED_KEYS if info.get(k) is not None), None)
    tag = ", ".join(f"{k} {info[k]}" for k in _TAG_KEYS if info.get(k) not in (None, ""))
    return DumpFingerprint(int(info.get("size") or 0), modified, tag)


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int | float):
        return float(value)
    try:
        return _epoch(datetime.fromisoformat(str(value)))
    except ValueError:
        return None


#: Filesystems that keep whole seconds (S3's LastModified, some local ones): a file modified in the
#: second an import started may have changed after that import read it.
_CLOCK_MARGIN_S = 1.0


def imported_as_is(live: Mapping[str, Any] | None, fingerprint: DumpFingerprint) -> bool:
    """Whether the live import ``live`` read the dump as it is now, judged without reading it: the
    same size, and last modified (by more than a second) before that import started. A dump that
    cannot be judged so counts as changed; its ingest then compares sha256 and skips it if equal."""
    if live is None or fingerprint.modified is None or live.get("dump_bytes") != fingerprint.size:
        return False
    started = datetime.fromisoformat(live["started_at"]).timestamp()
    return fingerprint.modified + _CLOCK_MARGIN_S < started


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
