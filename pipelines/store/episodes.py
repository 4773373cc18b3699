"""The episode store: immutable Parquet partitions per dump, committed by an import manifest.

Layout under the store URL (any fsspec location)::

    episodes/source_system=<s>/dump=<key>/part-<ingest_id>-<n>.parquet
    rejects/source_system=<s>/dump=<key>/part-<ingest_id>-<n>.parquet
    imports/source_system=<s>/dump=<key>/<ingest_id>.json      ← the commit

Data files are never modified and never reused: every ingest writes files under a fresh
``ingest_id``. The import manifest, written last and atomically (rename locally, a single PUT on
object stores), names the files that make up the partition; the newest manifest of a partition
is the live one. A crash at any instant therefore leaves the old partition or the new one, never
a mix, and re-ingesting a dump replaces its partition exactly once. Files no live manifest names
are left for :meth:`EpisodeStore.vacuum`, after a grace period, so an analyst's open catalog
never loses a file under its feet. One mechanism for every filesystem (DESIGN.md suggested
rename-locally, manifest-on-object-stores; the manifest works on both, so there is one code path).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import polars as pl

from connectors.base import Batch, Unread
from connectors.errors import StoreError
from connectors.kit.sql import duckdb_connect, quote_list
from connectors.schema import EPISODE_SCHEMA, REJECT_SCHEMA, RejectReason
from pipelines.store.locations import Location

#: A Parquet part is flushed once this many rows, or this many bytes of in-memory data, are
#: buffered; each part is sorted by (tenant_id, scope, observed_at) in memory, so these bound
#: the store's working memory whatever the dump's size.
PART_ROWS = 250_000
PART_BYTES = 32 << 20
SORT_KEY = ("tenant_id", "scope", "observed_at")
MANIFEST_VERSION = 2  # 2: an import replaces only its own tenant's imports of the partition

Progress = Callable[[int, int, int], None]


#: What makes rows versions of one episode: the same source record in the same tenant. The
#: ``episode_id`` is a digest of exactly these; the current version is chosen by them rather than by
#: the id, so ids written before the tenant was part of the digest (two tenants sharing one) still
#: resolve per tenant, and an old-id version and a new-id version of one episode are one episode.
IDENTITY = "tenant_id, source_system, source_id"

#: The version of an episode that is current. First, a version that says whose it is (user, agent
#: or session) before one that does not, unless that one is a tombstone: another dump of the same
#: record without identity (Mem0's history database beside a ``get_all`` page) never erases it.
#: Then the source's latest time (its last rewrite, ``updated_at``; else ``created_at``; else
#: ``observed_at``), then the latest ingest.
CURRENT_ORDER = (
    "(status <> 'deleted' AND user_id IS NULL AND agent_id IS NULL AND session_id IS NULL), "
    "coalesce(updated_at, created_at, observed_at) DESC NULLS LAST, "
    "ingested_at DESC, dump_uri DESC, dump_record DESC"
)


def typed_empty(schema: pl.Schema) -> pl.DataFrame:
    """An empty frame of ``schema`` with enums as plain strings, as Parquet readers see them."""
    frame = schema.to_frame()
    return frame.with_columns(pl.col(pl.Enum).cast(pl.String))


def dump_key(relpath: str) -> str:
    """A path-safe, reversible partition key for a dump's path relative to its landing folder."""
    return quote(relpath, safe="")


def dump_relpath(key: str) -> str:
    return unquote(key)


def live_flags(entries: Sequence[tuple[str, dict[str, Any]]]) -> list[bool]:
    """Which of ``entries`` (import manifest path, manifest) are live, one flag each, in order.

    A manifest is live unless a newer one of its partition (paths sort by ``ingest_id``) replaces
    it. An import replaces only its own tenant's earlier imports, so two tenants' landing zones can
    hold a dump of the same name and both stay live. An import written before manifest version 2
    replaced every earlier import of its partition, whatever the tenant, and still does: the files
    it replaced may since have been vacuumed.
    """
    flags = [False] * len(entries)
    tenants_seen: dict[str, set[str]] = {}  # per partition: tenants with a newer import
    closed: set[str] = set()  # partitions where a version-1 import replaced every older one
    for i in sorted(range(len(entries)), key=lambda i: entries[i][0], reverse=True):
        path, manifest = entries[i]
        partition = path.rsplit("/", 1)[0]
        tenant = str(manifest["tenant_id"])
        seen = tenants_seen.setdefault(partition, set())
        flags[i] = partition not in closed and tenant not in seen
        seen.add(tenant)
        if int(manifest.get("manifest_version", 1)) < 2:
            closed.add(partition)
    return flags


def new_ingest_id(now: datetime | None = None) -> str:
    """Sortable and unique: the newest manifest of a partition sorts last."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"


def ingest_time(ingest_id: str) -> datetime:
    return datetime.strptime(ingest_id.split("-", 1)[0], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class DumpInfo:
    """The dump being imported and how: lineage that goes into the import manifest."""

    uri: str
    source_system: str
    key: str
    connector_version: str
    tenant_id: str
    scope_template: str


@dataclass
class ImportResult:
    manifest: dict[str, Any]
    preview: pl.DataFrame = field(repr=False)
    #: The dump's bytes are those of its live import: nothing was read or written this time.
    skipped: bool = False

    @property
    def counts(self) -> dict[str, int]:
        return self.manifest["counts"]


class _PartWriter:
    """Buffers frames, writes sorted Parquet parts in a background thread (one in flight)."""

    def __init__(
        self,
        store: EpisodeStore,
        kind: str,
        dump: DumpInfo,
        ingest_id: str,
        *,
        sort: bool,
    ) -> None:
        self.store, self.sort = store, sort
        self.dir = store.partition_dir(kind, dump.source_system, dump.key)
        self.ingest_id = ingest_id
        self.buffer: list[pl.DataFrame] = []
        self.buffered = 0
        self.buffered_bytes = 0
        self.files: list[dict[str, Any]] = []
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"memport-{kind}")
        self.pending: Future[dict[str, Any]] | None = None

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height:
            self.buffer.append(frame)
            self.buffered += frame.height
            self.buffered_bytes += int(frame.estimated_size())
        if self.buffered >= PART_ROWS or self.buffered_bytes >= PART_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        frame = pl.concat(self.buffer, rechunk=False)
        self.buffer, self.buffered, self.buffered_bytes = [], 0, 0
        self._wait()
        path = f"{self.dir}/part-{self.ingest_id}-{len(self.files):05d}.parquet"
        self.files.append({"path": path})
        self.pending = self.pool.submit(self._write, frame, path)

    def _write(self, frame: pl.DataFrame, path: str) -> dict[str, Any]:
        if self.sort:
            frame = frame.sort(SORT_KEY)
        return self.store.write_parquet(frame, path)

    def _wait(self) -> None:
        if self.pending is not None:
            info = self.pending.result()
            self.files[len(self.files) - 1] = info
            self.pending = None

    def close(self) -> list[dict[str, Any]]:
        self.flush()
        self._wait()
        self.pool.shutdown()
        return self.files

    def abort(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class EpisodeStore:
    """Episodes, rejects and import manifests under one fsspec location."""

    def __init__(self, location: Location) -> None:
        self.location = location

    @classmethod
    def from_url(cls, url: str, **storage_options: object) -> EpisodeStore:
        return cls(Location.from_url(url, **storage_options))

    @property
    def fs(self) -> Any:
        return self.location.fs

    def partition_dir(self, kind: str, system: str, key: str) -> str:
        return self.location.path(kind, f"source_system={system}", f"dump={key}")

    # -- writing ---------------------------------------------------------------------------

    def write_parquet(self, frame: pl.DataFrame, path: str) -> dict[str, Any]:
        if self.location.is_local:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(path, "wb") as f:
            frame.write_parquet(f, compression="snappy", statistics=True, row_group_size=100_000)
        return {"path": path, "rows": frame.height, "bytes": self.fs.size(path)}

    def ingest(
        self,
        dump: DumpInfo,
        batches: Iterable[Batch],
        *,
        dump_fs: Any,
        progress: Progress | None = None,
        fail_after_parts: int | None = None,
    ) -> ImportResult:
        """Write one dump's batches as a new version of its partition, then commit it.

        ``fail_after_parts`` injects a crash after that many data files (tests of atomicity).
        """
        started = datetime.now(UTC)
        clock = time.perf_counter()
        ingest_id = new_ingest_id(started)
        digest = _DumpDigest(dump_fs, dump.uri)
        episodes = _PartWriter(self, "episodes", dump, ingest_id, sort=True)
        rejects = _PartWriter(self, "rejects", dump, ingest_id, sort=False)
        read = rejected = accepted = 0
        unread: list[Unread] = []
        reasons: Counter[str] = Counter()
        preview = EPISODE_SCHEMA.to_frame()
        key_hashes: list[pl.Series] = []  # 8 bytes a row: finds the dumps that need deduplicating
        try:
            for batch in batches:
                read += batch.read
                unread.extend(batch.unread)
                accepted += batch.episodes.height
                rejected += batch.rejects.height
                reasons.update(batch.rejects["reason"].cast(pl.String).to_list())
                if preview.height < 10:
                    preview = pl.concat([preview, batch.episodes.head(10 - preview.height)])
                key_hashes.append(batch.episodes["idempotency_key"].hash())
                episodes.add(batch.episodes)
                rejects.add(batch.rejects)
                if fail_after_parts is not None and len(episodes.files) >= fail_after_parts:
                    raise StoreError(f"injected failure after {fail_after_parts} part(s)")
                if progress:
                    progress(read, accepted, rejected)
            episode_files = episodes.close()
            maybe_dups = bool(key_hashes) and pl.concat(key_hashes).is_duplicated().any()
            duplicates, episode_files, dup_rejects = (
                self._deduplicate(episode_files, ingest_id)
                if maybe_dups
                else (0, episode_files, REJECT_SCHEMA.to_frame())
            )
            rejects.add(dup_rejects)
            reject_files = rejects.close()
        except BaseException:
            episodes.abort()
            rejects.abort()
            digest.cancel()
            raise
        accepted -= duplicates
        if accepted + rejected + duplicates != read:  # the invariant every import must keep
            raise StoreError(
                f"{dump.uri}: accounting mismatch: read {read} != accepted {accepted} + "
                f"rejected {rejected} + duplicate {duplicates}"
            )
        sha256, size = digest.result()
        finished = datetime.now(UTC)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "ingest_id": ingest_id,
            "source_system": dump.source_system,
            "dump_key": dump.key,
            "dump_uri": dump.uri,
            "dump_sha256": sha256,
            "dump_bytes": size,
            "connector_version": dump.connector_version,
            "tenant_id": dump.tenant_id,
            "scope_template": dump.scope_template,
            "started_at": started.isoformat(),
            "finished_at": finished.isoformat(),
            "duration_s": round(time.perf_counter() - clock, 3),
            "counts": {
                "read": read,
                "accepted": accepted,
                "rejected": rejected,
                "duplicate": duplicates,
                # Bytes of the dump not read into records (only when there are some): an
                # account balances only when the whole dump was read.
                **({"unread_bytes": sum(u.size for u in unread)} if unread else {}),
            },
            "unread": [dataclasses.asdict(u) for u in unread],
            "rejects_by_reason": dict(sorted(reasons.items())),
            "files": {"episodes": episode_files, "rejects": reject_files},
        }
        path = self.manifest_path(dump.source_system, dump.key, ingest_id)
        self.location.write_atomic(path, json.dumps(manifest, indent=2).encode())
        return ImportResult(manifest, preview)

    def manifest_path(self, system: str, key: str, ingest_id: str) -> str:
        return f"{self.partition_dir('imports', system, key)}/{ingest_id}.json"

    def _deduplicate(
        self, files: list[dict[str, Any]], ingest_id: str
    ) -> tuple[int, list[dict[str, Any]], pl.DataFrame]:
        """Within one dump, one row per tenant and idempotency key: the newest version, else the
        first seen (a re-imported every-tenant export holds the same key once per tenant).

        The others leave the episode files and go to rejects with reason ``duplicate``, the whole
        row kept as JSON, so nothing is lost.
        """
        with duckdb_connect(memory_limit="256MB") as con:
            self.location.register_with(con)
            paths = [self.location.uri(f["path"]) for f in files]
            dups = con.sql(
                f"""
                SELECT dump_record, first_value(dump_record) OVER w AS kept
                FROM read_parquet({quote_list(paths)}, hive_partitioning = false)
                WINDOW w AS (PARTITION BY tenant_id, idempotency_key
                             ORDER BY coalesce(updated_at, created_at, observed_at) DESC NULLS LAST,
                                      dump_record)
                QUALIFY row_number() OVER w > 1
                """
            ).pl()
        if dups.is_empty():
            return 0, files, REJECT_SCHEMA.to_frame()
        kept_files: list[dict[str, Any]] = []
        dropped: list[pl.DataFrame] = []
        for n, info in enumerate(files):
            with self.fs.open(info["path"], "rb") as f:
                part = pl.read_parquet(f)
            gone = part.join(dups, on="dump_record", how="inner")
            if gone.is_empty():
                kept_files.append(info)
                continue
            dropped.append(gone)
            rest = part.join(dups, on="dump_record", how="anti")
            self.fs.rm(info["path"])
            if rest.height:
                path = f"{info['path'].rsplit('/', 1)[0]}/part-{ingest_id}-d{n:05d}.parquet"
                kept_files.append(self.write_parquet(rest, path))
        gone = pl.concat(dropped)
        rejects = gone.select(
            tenant_id="tenant_id",
            source_system="source_system",
            dump_uri="dump_uri",
            dump_record="dump_record",
            reason=pl.lit(RejectReason.DUPLICATE.value),
            detail=pl.format("same idempotency_key as record {}, which was kept", "kept"),
            raw=pl.struct(EPISODE_SCHEMA.names()).struct.json_encode(),
            ingested_at="ingested_at",
        ).cast(REJECT_SCHEMA)
        return gone.height, kept_files, rejects

    # -- reading ---------------------------------------------------------------------------

    def manifests(self) -> Iterator[tuple[bool, dict[str, Any]]]:
        """Every import manifest, with whether it is live (:func:`live_flags`)."""
        pattern = self.location.path("imports", "source_system=*", "dump=*", "*.json")
        paths = sorted(self.fs.glob(pattern))
        raw: dict[str, bytes] = self.fs.cat(paths) if paths else {}  # concurrent on object stores
        loaded = [(path, json.loads(raw[path])) for path in paths]
        for live, (_, manifest) in zip(live_flags(loaded), loaded, strict=True):
            yield live, manifest

    def live_manifest(self, system: str, key: str, tenant_id: str) -> dict[str, Any] | None:
        """The committed import of one dump partition for ``tenant_id`` (:func:`live_flags`), or None."""
        paths = sorted(self.fs.glob(f"{self.partition_dir('imports', system, key)}/*.json"))
        raw: dict[str, bytes] = self.fs.cat(paths) if paths else {}
        entries = [(p, json.loads(raw[p])) for p in paths]
        live = [m for (_, m), flag in zip(entries, live_flags(entries), strict=True) if flag]
        return next((m for m in live if m["tenant_id"] == tenant_id), None)

    def live_manifests(self) -> list[dict[str, Any]]:
        return [m for live, m in self.manifests() if live]

    def live_rows(self, system: str) -> int:
        """Episodes in the live partitions of one system (every tenant): the ingest asset's rows."""
        paths = sorted(
            self.fs.glob(self.location.path("imports", f"source_system={system}", "dump=*", "*.json"))
        )
        raw: dict[str, bytes] = self.fs.cat(paths) if paths else {}
        entries = [(path, json.loads(raw[path])) for path in paths]
        return sum(
            int(m["counts"]["accepted"])
            for (_, m), live in zip(entries, live_flags(entries), strict=True)
            if live
        )

    def vacuum(self, *, grace: timedelta = timedelta(hours=24), dry_run: bool = False) -> list[str]:
        """Delete data files no live manifest names, and manifests' temporary files a killed
        import left, once older than ``grace``."""
        live = {
            f["path"]
            for m in self.live_manifests()
            for kind in ("episodes", "rejects")
            for f in m["files"][kind]
        }
        cutoff = datetime.now(UTC) - grace
        doomed = []
        for kind in ("episodes", "rejects"):
            for path in self.fs.glob(self.location.path(kind, "*", "*", "part-*.parquet")):
                ingest_id = path.rsplit("/", 1)[1].removeprefix("part-").rsplit("-", 1)[0]
                if path not in live and ingest_time(ingest_id) < cutoff:
                    doomed.append(path)
        # a manifest's temporary file, left by a process killed before its rename
        for path in self.fs.glob(self.location.path("imports", "*", "*", "*.json.tmp-*")):
            if ingest_time(path.rsplit("/", 1)[1].split(".", 1)[0]) < cutoff:
                doomed.append(path)
        if doomed and not dry_run:
            self.fs.rm(doomed)
        return doomed


class _DumpDigest:
    """SHA-256 and size of the dump, computed in a background thread while the dump is read."""

    def __init__(self, fs: Any, uri: str) -> None:
        self._result: tuple[str, int] | BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(fs, uri), daemon=True, name="memport-dump-sha256"
        )
        self._thread.start()

    def _run(self, fs: Any, uri: str) -> None:
        try:
            h, size = hashlib.sha256(), 0
            with fs.open(uri, "rb") as f:
                while (block := f.read(8 << 20)) and not self._stop.is_set():
                    h.update(block)
                    size += len(block)
            self._result = (h.hexdigest(), size)
        except BaseException as exc:
            self._result = exc

    def cancel(self) -> None:
        self._stop.set()

    def result(self) -> tuple[str, int]:
        self._thread.join()
        if isinstance(self._result, BaseException):
            raise StoreError(f"could not checksum the dump: {self._result}") from self._result
        assert self._result is not None
        return self._result
