"""Snapshot manifests read back from storage: parsed, checked, and every path confined to its root.

A manifest is data: anyone who can write to the backup location can change it, and a disk can
damage it. Before restore, retention or a snapshot acts on one, :func:`parse_manifest` checks its
shape, every ``sha256`` (the name of an object) and every ``path`` (a file of the store), and
:func:`safe_relpath` is the one rule for a path taken from a manifest: relative, no ``..``, ``.``
or empty segment, no backslash, no control character, no protocol or drive, under the folder of
its kind. :func:`inside` is the one way to join such a path to a root. A bad manifest stops the
work with a :class:`BackupError` naming it, before any file is touched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from connectors.errors import BackupError
from pipelines.store.locations import Location

#: The store folder each kind of snapshot entry lives in.
KIND_DIRS = {"episodes": "episodes", "rejects": "rejects", "import-manifest": "imports"}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # s3:, file:, C: …
_MAX_PATH = 4096


def path_problem(rel: object) -> str | None:
    """Why ``rel`` could leave the root it is joined to, or None if it cannot."""
    if not isinstance(rel, str) or not rel:
        return "is not a non-empty string"
    if len(rel) > _MAX_PATH:
        return f"is longer than {_MAX_PATH} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        return "contains a control character"
    if "\\" in rel:
        return "contains a backslash"
    if rel.startswith(("/", "~")):
        return "is absolute"
    if _SCHEME.match(rel):
        return "names a protocol or drive"
    if any(part in ("", ".", "..") for part in rel.split("/")):
        return "has an empty, '.' or '..' segment"
    return None


def safe_relpath(rel: object, *, where: str, under: str | None = None) -> str:
    """``rel`` if it stays inside any root it is joined to (and inside ``under/``, if given)."""
    problem = path_problem(rel)
    if problem is None and under is not None and not str(rel).startswith(under + "/"):
        problem = f"is not under {under}/"
    if problem is not None:
        raise BackupError(
            f"{where}: the path {rel!r} {problem}, so it could name a file outside the store; "
            "nothing was changed. The manifest was edited or damaged: restore another day, or take "
            "a new snapshot"
        )
    return str(rel)


def inside(location: Location, rel: object, *, where: str, under: str | None = None) -> str:
    """The path of ``rel`` under ``location``, once :func:`safe_relpath` has accepted it."""
    return location.path(safe_relpath(rel, where=where, under=under))


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def check_sha256(value: object, *, where: str) -> str:
    if not is_sha256(value):
        raise BackupError(
            f"{where}: {value!r} is not a sha256 (64 lowercase hex digits), so it names no object; "
            "nothing was changed. The manifest was edited or damaged: restore another day, or take "
            "a new snapshot"
        )
    return str(value)


def _count(value: object, *, where: str, name: str, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BackupError(f"{where}: {name} is {value!r}, not a count; the manifest is damaged")


def parse_manifest(raw: bytes, where: str, *, hint: Callable[[], str] = str) -> dict[str, Any]:
    """The snapshot manifest held in ``raw`` (read from ``where``), checked entry by entry.

    ``hint()`` is appended to the error for a damaged manifest: what the reader can do instead.
    """
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(
            f"the snapshot manifest {where} is damaged: its {len(raw)} bytes are not valid JSON "
            f"({exc}); it may have been truncated. {hint()}".rstrip()
        ) from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list) or not isinstance(manifest.get("store_root"), str):
        raise BackupError(
            f"the snapshot manifest {where} is damaged: not a memport snapshot manifest (no 'files' "
            f"list or 'store_root'). {hint()}".rstrip()
        )
    totals = manifest.get("totals")
    for name in ("files", "bytes", "episode_rows", "reject_rows"):
        value = totals.get(name) if isinstance(totals, dict) else None
        _count(value, where=f"snapshot manifest {where}", name=f"totals.{name}")
    for i, entry in enumerate(files):
        at = f"snapshot manifest {where}, files[{i}]"
        if not isinstance(entry, dict) or entry.get("kind") not in KIND_DIRS:
            raise BackupError(f"{at}: not an entry of a known kind ({', '.join(KIND_DIRS)}): {entry!r:.200}")
        safe_relpath(entry.get("path"), where=at, under=KIND_DIRS[entry["kind"]])
        check_sha256(entry.get("sha256"), where=at)
        _count(entry.get("bytes"), where=at, name="bytes")
        _count(entry.get("rows"), where=at, name="rows", optional=True)
    return manifest
