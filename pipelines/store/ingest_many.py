"""Ingest several dumps of one system, a few at a time: what a backfill run of many partitions does.

Each dump is :func:`~pipelines.store.ingest.ingest_dump` unchanged (its own commit, unchanged
dumps skipped, ``force``); one that fails costs only itself. Dumps are read by a small thread pool
(Polars, DuckDB, hashing and Parquet writes release the GIL); a dump of ``BIG_DUMP_BYTES`` or more
is read alone, after the others, so that memory stays that of one big dump at a time.

Results come back in the caller's thread, in the order the dumps finish, with the progress
messages of the workers: the caller may log through something that is not thread-safe. One dump
alone (a single-partition run, a big dump, ``workers=1``) is read in the caller's thread, as
before: live progress, and an interrupt (Ctrl-C, a run's termination) stops it at once.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from pipelines.store.episodes import EpisodeStore, ImportResult
from pipelines.store.ingest import ingest_dump
from pipelines.store.locations import Location

#: A dump this big or bigger is ingested alone (its reader's memory is bounded per dump, not per run).
BIG_DUMP_BYTES = 64 << 20
#: How often (records read) a dump reports its progress.
PROGRESS_EVERY = 250_000


@dataclass(frozen=True)
class DumpOptions:
    """How one dump is imported (from the import settings)."""

    tenant_id: str
    scope_template: str | None = None
    path_fields: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Outcome:
    """One dump's end: its import, or the error that stopped it."""

    relpath: str
    result: ImportResult | None
    error: BaseException | None


def ingest_dumps(
    store: EpisodeStore,
    landing: Location,
    system: str,
    relpaths: list[str],
    options: Callable[[str], DumpOptions],
    *,
    workers: int = 2,
    force: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> Iterator[Outcome]:
    """One :class:`Outcome` per dump of ``relpaths``, as each finishes; ``log`` gets the progress
    messages, in the caller's thread."""
    messages: queue.SimpleQueue[str] = queue.SimpleQueue()

    def one(relpath: str, say: Callable[[str], None]) -> ImportResult:
        state = {"next": 0}

        def progress(read: int, accepted: int, rejected: int) -> None:
            if read >= state["next"] and read:
                say(f"{relpath}: read {read:,} records ({accepted:,} accepted, {rejected:,} rejected so far)")
                state["next"] = read + PROGRESS_EVERY

        opts = options(relpath)
        return ingest_dump(
            store,
            landing,
            system,
            relpath,
            tenant_id=opts.tenant_id,
            scope_template=opts.scope_template,
            path_fields=opts.path_fields,
            progress=progress,
            force=force,
        )

    def drain() -> None:
        while True:
            try:
                log(messages.get_nowait())
            except queue.Empty:
                return

    def inline(batch: list[str]) -> Iterator[Outcome]:
        """One at a time in the caller's thread: progress logged live, an interrupt stops it at once."""
        for relpath in batch:
            try:
                result = one(relpath, log)
            except Exception as error:  # one dump's failure is its outcome, not the others'
                yield Outcome(relpath, None, error)
                continue
            yield Outcome(relpath, result, None)

    def run(batch: list[str], size: int) -> Iterator[Outcome]:
        if size <= 1 or len(batch) <= 1:
            yield from inline(batch)
            return
        pool = ThreadPoolExecutor(min(size, len(batch)), thread_name_prefix=f"ingest-{system}")
        try:
            pending: dict[Future[ImportResult], str] = {pool.submit(one, r, messages.put): r for r in batch}
            while pending:
                done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                drain()
                for future in done:
                    relpath = pending.pop(future)
                    error = future.exception()
                    yield Outcome(relpath, None if error else future.result(), error)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            drain()

    small, big = _by_size(landing, system, relpaths) if workers > 1 else (relpaths, [])
    yield from run(small, workers)
    yield from run(big, 1)


def _by_size(landing: Location, system: str, relpaths: list[str]) -> tuple[list[str], list[str]]:
    """The dumps under ``BIG_DUMP_BYTES``, and the others (a dump whose size cannot be read is left
    with the small ones: its ingest says what is wrong with it)."""
    small: list[str] = []
    big: list[str] = []
    for relpath in relpaths:
        try:
            size = int(landing.fs.size(landing.path(system, relpath)))
        except (OSError, ValueError, TypeError):
            size = 0
        (big if size >= BIG_DUMP_BYTES else small).append(relpath)
    return small, big
