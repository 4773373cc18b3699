"""The export lifecycle: an id, a manifest beside the files, states, expiry and clear errors.

``<exports>/<id>/manifest.json`` is written atomically at every transition::

    PENDING → PROCESSING → READY | FAILED      and, once ``expires_at`` has passed,   → EXPIRED

It holds the id, name, format, profile, compression, part size, the filters used, the
destination, the row count, per file its name, URL, bytes and sha256, the error of a failed
export, and the times (created, started, finished, expires, expired). Expiry deletes the files
and keeps the manifest, so asking for an expired export says so instead of "not found".
"""

from __future__ import annotations

import json
import time
import traceback
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.errors import (
    ExportExpiredError,
    ExportFailedError,
    ExportNotFoundError,
    ExportNotReadyError,
)
from pipelines.exports.request import FILE_STEM, ExportRequest, file_stem
from pipelines.exports.writer import Progress, write_export
from pipelines.store.episodes import EpisodeStore
from pipelines.store.locations import Location

PENDING, PROCESSING, READY, FAILED, EXPIRED = "PENDING", "PROCESSING", "READY", "FAILED", "EXPIRED"
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def new_export_id(now: datetime | None = None) -> str:
    """Sortable and unique: ``exp-<UTC time>-<8 hex>``."""
    now = now or datetime.now(UTC)
    return f"exp-{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def manifest_path(exports: Location, export_id: str) -> str:
    return exports.path(export_id, MANIFEST)


def _save(exports: Location, manifest: dict[str, Any]) -> dict[str, Any]:
    exports.write_atomic(manifest_path(exports, manifest["id"]), json.dumps(manifest, indent=2).encode())
    return manifest


def submit(exports: Location, request: ExportRequest, *, export_id: str | None = None) -> dict[str, Any]:
    """Record a new export as PENDING and return its manifest."""
    export_id = export_id or new_export_id()
    if not FILE_STEM.fullmatch(export_id):
        raise ValueError(f"export id {export_id!r} is not a plain file name")
    dest = request.destination or exports.uri(exports.path(export_id))
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "id": export_id,
        "name": request.name,
        "status": PENDING,
        "format": request.format,
        "profile": request.profile,
        "compression": request.compression,
        "max_part_bytes": request.max_part_bytes,
        "neutralize_formulas": request.neutralize_formulas if request.format == "csv" else None,
        "filters": request.filters.used() | {"tenant_id": request.filters.tenant_id},
        "request": request.to_dict(),
        "destination": dest,
        "ttl_hours": request.ttl_hours,
        "rows": None,
        "files": [],
        "error": None,
        "created_at": _now(),
        "started_at": None,
        "finished_at": None,
        "duration_s": None,
        "expires_at": None,
        "expired_at": None,
    }
    return _save(exports, manifest)


def run(
    store: EpisodeStore,
    exports: Location,
    manifest: dict[str, Any],
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Take a PENDING export through PROCESSING to READY, or to FAILED keeping the error.

    Returns the final manifest; a failure is recorded, not raised (the caller decides).
    """
    request = ExportRequest.parse(manifest["request"])
    manifest = manifest | {"status": PROCESSING, "started_at": _now()}
    _save(exports, manifest)
    clock = time.perf_counter()
    custom = request.destination is not None
    base = file_stem(request.name)  # the name is a label; the files take its sanitized slug
    try:
        dest = Location.from_url(manifest["destination"])
        rows, files = write_export(
            store,
            request,
            dest,
            f"{base}-{manifest['id']}" if custom else base,
            title=f"memport export {request.name or manifest['id']}",
            progress=progress,
        )
        manifest |= {"status": READY, "rows": rows, "files": files}
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(exc)).strip()
        manifest |= {"status": FAILED, "error": detail}
    finished = datetime.now(UTC)
    manifest |= {
        "finished_at": finished.isoformat(),
        "duration_s": round(time.perf_counter() - clock, 3),
        "expires_at": (finished + timedelta(hours=manifest["ttl_hours"])).isoformat(),
    }
    return _save(exports, manifest)


def export(
    store: EpisodeStore,
    exports: Location,
    request: ExportRequest,
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Submit and run one export; returns its final manifest (READY or FAILED)."""
    return run(store, exports, submit(exports, request), progress=progress)


def get(exports: Location, export_id: str) -> dict[str, Any]:
    """The export's manifest, whatever its state; :class:`ExportNotFoundError` if there is none."""
    path = manifest_path(exports, file_stem(export_id))
    if not FILE_STEM.fullmatch(export_id) or not exports.fs.exists(path):  # an id, never a path
        raise ExportNotFoundError(
            export_id, f"export {export_id!r} not found under {exports.url()} (EXPORT_NOT_FOUND)"
        )
    return json.loads(exports.fs.cat_file(path))


def ready(exports: Location, export_id: str) -> dict[str, Any]:
    """The manifest of a READY export, or the error that says why it cannot be used."""
    m = get(exports, export_id)
    status = m["status"]
    if status in (PENDING, PROCESSING):
        raise ExportNotReadyError(
            export_id, f"export {export_id} is {status}, not ready yet; ask again later (EXPORT_NOT_READY)"
        )
    if status == FAILED:
        raise ExportFailedError(export_id, f"export {export_id} FAILED: {m['error']}")
    if status == EXPIRED:
        raise ExportExpiredError(
            export_id,
            f"export {export_id} expired at {m['expired_at']} and its files were deleted; "
            "run the export again (EXPORT_EXPIRED)",
        )
    return m


def manifests(exports: Location) -> list[dict[str, Any]]:
    """Every export's manifest, newest first."""
    paths = exports.fs.glob(exports.path("*", MANIFEST)) if exports.fs.exists(exports.root) else []
    found = [json.loads(exports.fs.cat_file(p)) for p in paths]
    return sorted(found, key=lambda m: m["created_at"], reverse=True)


#: How long past its time to live an export may stay PENDING/PROCESSING before it counts as
#: abandoned (no export runs for a day; a run that died leaves its manifest in that state).
ABANDONED_AFTER = timedelta(hours=24)


def expire(exports: Location, *, now: datetime | None = None) -> list[str]:
    """Delete the files of READY/FAILED exports past ``expires_at``; mark them EXPIRED.

    An export still PENDING or PROCESSING ``ABANDONED_AFTER`` past its time to live (counted from
    its creation) was left by a run that died: it is marked FAILED with that error, then expired
    like the others, so its leftovers go too.
    """
    now = now or datetime.now(UTC)
    expired = []
    for m in manifests(exports):
        if m["status"] in (PENDING, PROCESSING):
            created = datetime.fromisoformat(m["created_at"])
            if created + timedelta(hours=m["ttl_hours"]) + ABANDONED_AFTER > now:
                continue
            m = m | {
                "status": FAILED,
                "error": f"abandoned: still {m['status']} {now - created} after it was created "
                "(the run that owned it stopped)",
                "finished_at": now.isoformat(),
                "expires_at": now.isoformat(),
            }
        if m["status"] not in (READY, FAILED) or datetime.fromisoformat(m["expires_at"]) > now:
            continue
        dest = Location.from_url(m["destination"])
        doomed = {dest.path(f["name"]) for f in m["files"]}
        if m["destination"] == exports.uri(exports.path(m["id"])):  # also a failed run's leftovers
            doomed |= {p for p in exports.fs.find(exports.path(m["id"])) if not p.endswith(MANIFEST)}
        for path in sorted(doomed):
            if dest.fs.exists(path):
                dest.fs.rm(path)
        _save(exports, m | {"status": EXPIRED, "expired_at": now.isoformat()})
        expired.append(m["id"])
    return expired
