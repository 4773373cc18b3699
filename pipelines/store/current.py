"""The current state of the store, materialized and kept up to date at the cost of what changed.

Layout under ``<store>/current/`` (merge-on-read, as Iceberg's and DuckLake's delete files)::

    _state/<generation>.json           ← the commit: which segments, delete files, imports table
    episodes/seg-<tag>.parquet         the current version of each episode (+ bookkeeping columns)
    episodes/del-<tag>.parquet         row numbers of a segment that are no longer current
    log/seg-<tag>.parquet              every live version (``episode_log``), as the imports wrote them
    asof/seg-<tag>.parquet             for episodes with several versions, which one is current when
    rejects/seg-<tag>.parquet          the rejects of the live imports
    <table>/idx-<tag>.bin              where each identity's rows are in segment <tag> (episodes, log,
                                       asof: ``pipelines.store.identity_index``)
    imports-<tag>.parquet              every import manifest, live or not (``imports_index``)

Segments are sorted (by tenant_id, scope, observed_at; rejects by tenant_id, reason) and never
modified. A refresh reads only the import manifests committed since the last one, the data files
of the imports that became live, the positions of the episodes they touch (new versions, and
versions of replaced imports) and those episodes' versions from the data files of the imports
holding them; it writes those episodes' new state as one small segment and marks their old rows in
delete files. The log and the rejects are appended to (deleted from only when an import is
replaced). Small segments are merged in tiers (``FANOUT`` of a size into one of the next), and a
segment with many deleted rows is rewritten, so a query reads a few large sorted files whatever the
number of dumps. The state file is written last and atomically: a crash leaves the old state or
the new.

Bookkeeping columns (``_identity_hash``: DuckDB's hash of the identity, which is why the state
records the DuckDB version and is rebuilt under another; ``_ingest_id``: the import the row came
from; in current rows, ``_versions``: how many live versions the episode has, ``_holders``: the
imports holding them, comma-separated (NULL for one), and ``_from``/``_to``: for an episode with
one version, when ``episodes_as_of`` gives it, ``segments.OWN_SPAN``) are left out of the views.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from connectors.errors import StoreError
from connectors.kit.sql import duckdb_connect
from pipelines.store import imports_index
from pipelines.store.episodes import (
    EpisodeStore,
    ingest_time,
    live_flags,
    new_ingest_id,
)
from pipelines.store.segments import DIR, LAYOUT, TABLES, Merge, Segment, State

HIDDEN = ("_ingest_id", "_identity_hash", "_versions", "_holders", "_from", "_to")
MEMORY_LIMIT = "3GB"


@dataclass
class Refresh:
    """What a refresh did: the files it read from the log and wrote into ``current/``."""

    state: State
    imports: pl.DataFrame
    full: bool
    added: list[str]
    removed: list[str]
    read: list[str]
    written: list[str]


def _load_state(store: EpisodeStore) -> State | None:
    loc = store.location
    paths = sorted(loc.fs.glob(loc.path(DIR, "_state", "*.json")))
    if not paths:
        return None
    raw = json.loads(loc.fs.cat_file(paths[-1]))
    if raw.get("layout") != LAYOUT or raw.get("duckdb") != duckdb.__version__:
        return None  # _identity_hash is DuckDB's hash: another version may hash differently
    state = State(
        gen=raw["gen"],
        imports=raw["imports"],
        episodes=[Segment(**s) for s in raw["episodes"]],
        log=[Segment(**s) for s in raw["log"]],
        asof=[Segment(**s) for s in raw["asof"]],
        rejects=[Segment(**s) for s in raw["rejects"]],
    )
    files = [state.imports] + [f for s in state.segments() for f in s.files()]
    return state if all(loc.fs.exists(loc.path(DIR, f)) for f in files) else None


def load_state(store: EpisodeStore) -> tuple[State, pl.DataFrame] | None:
    """The committed current state and its imports table, or None if there is none (or unusable)."""
    state = _load_state(store)
    if state is None:
        return None
    with store.fs.open(store.location.path(DIR, state.imports), "rb") as f:
        return state, pl.read_parquet(f)


def _relist(store: EpisodeStore, imports: pl.DataFrame, new_paths: list[str]) -> pl.DataFrame:
    """The imports table with the manifests at ``new_paths`` added and every ``live`` flag recomputed
    in the partitions they touch (:func:`live_flags`)."""
    loc = store.location
    raw: dict[str, bytes] = loc.fs.cat([loc.path(p) for p in new_paths]) if new_paths else {}
    rows = [imports_index.import_row(p, json.loads(raw[loc.path(p)]), loc.root) for p in new_paths]
    table = pl.concat([imports, imports_index.frame(rows)]) if rows else imports
    touched = {p.rsplit("/", 1)[0] for p in new_paths}
    part = table.with_columns(_part=pl.col("_manifest").str.replace(r"/[^/]*$", ""))
    mine = part.filter(pl.col("_part").is_in(list(touched)))
    entries = [
        (m, {"tenant_id": t, "manifest_version": v})
        for m, t, v in mine.select("_manifest", "tenant_id", "_manifest_version").iter_rows()
    ]
    flags = dict(zip([m for m, _ in entries], live_flags(entries), strict=True))
    return table.with_columns(
        live=pl.col("_manifest").replace_strict(flags, default=pl.col("live"), return_dtype=pl.Boolean())
    ).sort("started_at", descending=True)


def refresh(store: EpisodeStore, *, rebuild: bool = False) -> Refresh:
    """Bring ``<store>/current/`` up to date with the committed imports; ``rebuild``: from scratch."""
    loc = store.location
    listing = _manifest_listing(store)
    loaded = None if rebuild else load_state(store)
    if loaded is not None and not set(loaded[1]["_manifest"]) <= set(listing):
        loaded = None  # a commit was removed (a restore): the state no longer follows from the log
    full = loaded is None
    if loaded is None:  # generations go on from the newest state file, usable or not
        states = loc.fs.glob(loc.path(DIR, "_state", "*.json"))
        last = max((int(p.rsplit("/", 1)[1].split(".")[0]) for p in states), default=0)
    state, imports = loaded or (State(gen=last, imports=""), imports_index.frame([]))
    known = set(imports["_manifest"])
    new_paths = [p for p in listing if p not in known]
    if not new_paths and not full:
        return Refresh(state, imports, False, [], [], [], [])
    was_live = set(imports.filter("live")["_manifest"])
    imports = _relist(store, imports, new_paths)
    now_live = set(imports.filter("live")["_manifest"])
    added = imports.filter(pl.col("_manifest").is_in(list(now_live - was_live)))
    removed = imports.filter(pl.col("_manifest").is_in(list(was_live - now_live)))
    with tempfile.TemporaryDirectory(prefix="memport-current-") as tmp:
        # bounded: a full rebuild sorts the whole store, spilling to ``tmp`` beyond the limit
        con = duckdb_connect(temp_directory=tmp, preserve_insertion_order=False, memory_limit=MEMORY_LIMIT)
        try:
            loc.register_with(con)
            merge = Merge(store, con, state)
            read = merge.apply(added, list(removed["ingest_id"]), imports)
            merge.compact()
            state, written = merge.state, merge.written
        finally:
            con.close()
    tag = new_ingest_id()
    state.imports = f"imports-{tag}.parquet"
    if loc.is_local:
        loc.fs.makedirs(loc.path(DIR), exist_ok=True)
    with loc.fs.open(loc.path(DIR, state.imports), "wb") as f:
        imports.write_parquet(f)
    written.append(state.imports)
    state.gen += 1
    _commit(store, state)
    return Refresh(state, imports, full, list(added["ingest_id"]), list(removed["ingest_id"]), read, written)


def _manifest_listing(store: EpisodeStore) -> list[str]:
    """Every import manifest's path relative to the store (a listing; none is read)."""
    loc = store.location
    if not loc.is_local:
        return sorted(p[len(loc.root) + 1 :] for p in loc.fs.glob(loc.path("imports", "*", "*", "*.json")))
    found, base = [], Path(loc.path("imports"))
    for folder in base.glob("*/*") if base.is_dir() else []:  # os.scandir: 5x fsspec's glob
        with os.scandir(folder) as entries:
            found += [
                f"imports/{folder.parent.name}/{folder.name}/{e.name}"
                for e in entries
                if e.name.endswith(".json")
            ]
    return sorted(found)


def _commit(store: EpisodeStore, state: State) -> None:
    path = store.location.path(DIR, "_state", f"{state.gen:012d}.json")
    if store.fs.exists(path):
        raise StoreError(
            f"another refresh committed generation {state.gen} of {store.location.url()}/{DIR} at the "
            "same time; run the refresh again (it starts from the newer state)"
        )
    body = json.dumps({**asdict(state), "committed_at": datetime.now(UTC).isoformat()}, indent=1).encode()
    if not store.location.is_local:  # one PUT; two refreshes racing on one object store: last wins
        store.location.write_atomic(path, body)
        return
    tmp = f"{path}.tmp-{new_ingest_id()}"
    Path(tmp).parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # atomic, and fails if a concurrent refresh committed this generation
    except (FileExistsError, FileNotFoundError):  # not found: the winner swept our temporary file
        raise StoreError(
            f"another refresh committed generation {state.gen} of {store.location.url()}/{DIR} at the "
            "same time; run the refresh again (it starts from the newer state)"
        ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    # A temporary state file of a generation now committed can never commit (a killed refresh
    # left it, or a racing one that is about to fail): remove it.
    for dead in Path(path).parent.glob("*.json.tmp-*"):
        if int(dead.name.split(".", 1)[0]) <= state.gen:
            dead.unlink(missing_ok=True)


def vacuum(store: EpisodeStore, *, grace: timedelta, dry_run: bool = False) -> list[str]:
    """Delete files under ``current/`` the committed state no longer names, once older than
    ``grace`` (an analyst's open catalog may still read them), and superseded state files."""
    state = _load_state(store)
    loc = store.location
    keep = set()
    states = sorted(loc.fs.glob(loc.path(DIR, "_state", "*.json")))
    if state is not None:
        keep = {state.imports} | {f for s in state.segments() for f in s.files()}
    cutoff = datetime.now(UTC) - grace
    doomed = []
    for path in _data_files(store):
        rel = path[len(loc.path(DIR)) + 1 :]
        name = rel.rsplit("/", 1)[-1]
        tag = name.split("-", 1)[1].rsplit(".", 1)[0].split(".tmp", 1)[0]
        if rel not in keep and ingest_time(tag) < cutoff:
            doomed.append(path)
    for path in states[:-1]:
        if datetime.fromtimestamp(loc.fs.modified(path).timestamp(), UTC) < cutoff:
            doomed.append(path)
    if doomed and not dry_run:
        loc.fs.rm(doomed)
    return doomed


def _data_files(store: EpisodeStore) -> Iterable[str]:
    loc = store.location
    for pattern in (
        "imports-*.parquet",
        *(f"{t}/*.parquet" for t in TABLES),
        *(f"{t}/idx-*.bin" for t in TABLES),
    ):
        yield from loc.fs.glob(loc.path(DIR, pattern))
