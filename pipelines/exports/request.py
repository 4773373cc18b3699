"""The export request: what to export, in which format, to where. Validated before any work.

A request is given as a flat mapping (a YAML spec, the launchpad's run config, the command line's
options all produce one) and parsed by :meth:`ExportRequest.parse`. Every problem raises
:class:`~connectors.errors.ExportRequestError` naming the field.

Times are said explicitly, never guessed from magnitude: ``created_after`` / ``created_before`` /
``as_of`` take ISO 8601 text (naive = UTC, a bare date = midnight UTC); the same names with the
suffix ``_ms`` take integer epoch milliseconds. The observed range, ``observed_start_us`` /
``observed_end_us``, is integer microseconds since the epoch (CortexDB's filter unit). Every
bound is inclusive.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.errors import ExportRequestError
from connectors.schema import EPISODE_TYPES, PRIORITIES, SOURCE_SYSTEMS

FORMATS = ("json", "ndjson", "csv", "markdown")
#: Peer-shaped profiles and the one format each is written in.
PROFILES = {"cortexdb": "ndjson", "mnueron": "csv"}
COMPRESSIONS = ("gzip", "zstd")
MAX_CATEGORIES = 20
DEFAULT_TTL_HOURS = 72.0
#: Smallest part size accepted: DuckDB checks sizes per 2,048-row chunk, so smaller is meaningless.
MIN_PART_BYTES = 64 * 1024
ALL_TENANTS = "*"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ExportFilters:
    """Which episodes. ``tenant_id`` is mandatory: ``"*"`` asks for every tenant, explicitly."""

    tenant_id: str
    scope: str | None = None
    namespace: str | None = None
    types: tuple[str, ...] = ()
    source_system: str | None = None
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    priority: str | None = None
    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    created_after: datetime | None = None
    created_before: datetime | None = None
    observed_start_us: int | None = None
    observed_end_us: int | None = None
    as_of: datetime | None = None
    include_superseded: bool = False
    include_deleted: bool = False

    def used(self) -> dict[str, Any]:
        """The filters that narrow the export, JSON-friendly (times as ISO 8601)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value in (None, (), {}, False):
                continue
            out[f.name] = _jsonable(value)
        return out


@dataclass(frozen=True)
class ExportRequest:
    format: str
    filters: ExportFilters
    #: A directory URL (any fsspec URL) for the files; default ``<exports url>/<id>/``.
    destination: str | None = None
    profile: str | None = None
    compression: str | None = None
    max_part_bytes: int | None = None
    #: CSV only: prefix ``'`` to cells a spreadsheet would run as a formula. On by default.
    neutralize_formulas: bool = True
    ttl_hours: float = DEFAULT_TTL_HOURS
    #: The spec's name (or ``--name``): a label, kept as given; file names use :func:`file_stem`.
    name: str | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> ExportRequest:
        return _parse(data)

    def to_dict(self) -> dict[str, Any]:
        """The request as given back to :meth:`parse` (times as ISO 8601)."""
        out = {k: v for k, v in asdict(self).items() if k != "filters" and v is not None}
        if self.format != "csv":
            out.pop("neutralize_formulas")
        return out | self.filters.used() | {"tenant_id": self.filters.tenant_id}


#: What an export's file names are made of: never a path, a glob, a quote or a DuckDB ``{i}``.
FILE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


def file_stem(name: str | None) -> str:
    """The stem of an export's file names for the label ``name``: a sanitized slug.

    A name is a label, never a path: every run of characters other than ASCII letters, digits,
    ``.``, ``_`` and ``-`` becomes one ``_``, leading ``.``/``_``/``-`` go, the rest is cut to
    80 characters; ``episodes`` when nothing is left. ``../../../X`` → ``X``; ``it's`` → ``it_s``.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name or "").lstrip("._-")[:80].rstrip("._-")
    return stem if FILE_STEM.fullmatch(stem) else "episodes"


_OPTION_KEYS = {f.name for f in fields(ExportRequest)} - {"filters"}
_FILTER_KEYS = {f.name for f in fields(ExportFilters)}
_TIME_KEYS = ("created_after", "created_before", "as_of")
KNOWN_KEYS = frozenset(_OPTION_KEYS | _FILTER_KEYS | {f"{k}_ms" for k in _TIME_KEYS})


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _text(data: Mapping[str, Any], key: str, *, choices: tuple[str, ...] | None = None) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ExportRequestError(key, f"expected a non-empty string, got {value!r}")
    if choices is not None and value not in choices:
        raise ExportRequestError(key, f"{value!r} is not one of {', '.join(choices)}")
    return value


def _texts(data: Mapping[str, Any], key: str, *, choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ExportRequestError(key, f"expected a list of non-empty strings, got {value!r}")
    if choices is not None:
        for v in value:
            if v not in choices:
                raise ExportRequestError(key, f"{v!r} is not one of {', '.join(choices)}")
    return tuple(dict.fromkeys(value))


def _int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExportRequestError(key, f"expected an integer, got {value!r}")
    return value


def _bool(data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ExportRequestError(key, f"expected true or false, got {value!r}")
    return value


def parse_time(key: str, value: Any) -> datetime:
    """ISO 8601 text → aware UTC datetime; naive is UTC, a bare date is midnight UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ExportRequestError(
                key,
                f"{value!r} is not an ISO 8601 timestamp (e.g. 2025-06-01T12:00:00Z); "
                f"for epoch milliseconds use {key}_ms",
            ) from None
    else:
        raise ExportRequestError(key, f"expected ISO 8601 text, got {value!r}")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _time(data: Mapping[str, Any], key: str) -> datetime | None:
    iso, ms = data.get(key), data.get(f"{key}_ms")
    if iso is not None and ms is not None:
        raise ExportRequestError(key, f"give {key} (ISO 8601) or {key}_ms (epoch ms), not both")
    if ms is not None:
        millis = _int(data, f"{key}_ms")
        assert millis is not None
        try:
            return EPOCH + timedelta(milliseconds=millis)
        except OverflowError:
            raise ExportRequestError(f"{key}_ms", f"{millis} is out of range") from None
    return None if iso is None else parse_time(key, iso)


def _metadata(data: Mapping[str, Any]) -> dict[str, Any]:
    value = data.get("metadata")
    if value is None:
        return {}
    if isinstance(value, str):  # the command line and some launchers give JSON text
        try:
            value = json.loads(value)
        except ValueError:
            raise ExportRequestError("metadata", "expected a JSON object of top-level keys") from None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k for k in value):
        raise ExportRequestError("metadata", f"expected an object of top-level keys, got {value!r}")
    for k, v in value.items():
        if k == "*":  # DuckDB's JSON paths read `*` as a wildcard even when quoted
            raise ExportRequestError(
                "metadata",
                "key '*' cannot be matched literally (it is a JSON path wildcard); filter on another "
                "key, or query the catalog with `memport sql` and json_keys(metadata)",
            )
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            raise ExportRequestError("metadata", f"key {k!r}: a JSON value other than null is needed")
    return dict(value)


def _filters(data: Mapping[str, Any]) -> ExportFilters:
    tenant = _text(data, "tenant_id")
    if tenant is None:
        raise ExportRequestError("tenant_id", "is required; use '*' to export every tenant explicitly")
    categories = _texts(data, "categories")
    if len(categories) > MAX_CATEGORIES:
        raise ExportRequestError("categories", f"at most {MAX_CATEGORIES} allowed, got {len(categories)}")
    scope = _text(data, "scope")
    if scope is not None and scope.endswith("/"):
        raise ExportRequestError("scope", f"{scope!r}: give the scope without a trailing '/'")
    filters = ExportFilters(
        tenant_id=tenant,
        scope=scope,
        namespace=_text(data, "namespace"),
        types=_texts(data, "types", choices=EPISODE_TYPES),
        source_system=_text(data, "source_system", choices=SOURCE_SYSTEMS),
        user_id=_text(data, "user_id"),
        agent_id=_text(data, "agent_id"),
        session_id=_text(data, "session_id"),
        priority=_text(data, "priority", choices=PRIORITIES),
        categories=categories,
        tags=_texts(data, "tags"),
        metadata=_metadata(data),
        created_after=_time(data, "created_after"),
        created_before=_time(data, "created_before"),
        observed_start_us=_int(data, "observed_start_us"),
        observed_end_us=_int(data, "observed_end_us"),
        as_of=_time(data, "as_of"),
        include_superseded=_bool(data, "include_superseded", False),
        include_deleted=_bool(data, "include_deleted", False),
    )
    if filters.created_after and filters.created_before and filters.created_after > filters.created_before:
        raise ExportRequestError("created_after", "is after created_before")
    start, end = filters.observed_start_us, filters.observed_end_us
    if start is not None and end is not None and start > end:
        raise ExportRequestError("observed_start_us", "is after observed_end_us")
    return filters


def _parse(data: Mapping[str, Any]) -> ExportRequest:
    if not isinstance(data, Mapping):
        raise ExportRequestError("<request>", f"expected a mapping of fields, got {type(data).__name__}")
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise ExportRequestError(unknown[0], f"unknown field; known fields: {', '.join(sorted(KNOWN_KEYS))}")
    fmt = _text(data, "format", choices=FORMATS)
    if fmt is None:
        raise ExportRequestError("format", f"is required: one of {', '.join(FORMATS)}")
    profile = _text(data, "profile", choices=tuple(PROFILES))
    if profile is not None and PROFILES[profile] != fmt:
        raise ExportRequestError("profile", f"{profile!r} is written as {PROFILES[profile]}, not {fmt}")
    compression = _text(data, "compression", choices=COMPRESSIONS)
    if fmt == "markdown" and compression == "zstd":
        raise ExportRequestError(
            "compression", "markdown is written by Python, which has no zstd here; use gzip"
        )
    part = _int(data, "max_part_bytes")
    if part is not None and part < MIN_PART_BYTES:
        raise ExportRequestError("max_part_bytes", f"at least {MIN_PART_BYTES} bytes, got {part}")
    ttl = data.get("ttl_hours", DEFAULT_TTL_HOURS)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < 1e6:
        raise ExportRequestError("ttl_hours", f"expected a positive number of hours, got {ttl!r}")
    neutralize = _bool(data, "neutralize_formulas", True)
    if fmt != "csv" and "neutralize_formulas" in data and neutralize:
        raise ExportRequestError("neutralize_formulas", "applies to csv only")
    return ExportRequest(
        format=fmt,
        filters=_filters(data),
        destination=_text(data, "destination"),
        profile=profile,
        compression=compression,
        max_part_bytes=part,
        neutralize_formulas=neutralize,
        ttl_hours=float(ttl),
        name=_text(data, "name"),
    )
