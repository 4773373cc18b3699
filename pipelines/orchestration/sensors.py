"""The landing sensor: a new or re-delivered dump in ``<landing>/<system>/`` becomes a run.

Each tick lists the landing zone and compares every dump's fingerprint (size, modification time,
ETag/checksum/inode: :class:`~pipelines.store.ingest.DumpFingerprint`, read from the listing, no
dump opened) with the one it saw when it last requested that dump's ingest, kept in the sensor's
cursor (a JSON map ``system → {dump → 16-hex digest}``, holding only the dumps present now, so it
grows with the landing zone, not with time):

- a dump that is no partition yet: the partition is added and its ingest launched;
- a known dump whose fingerprint changed (overwritten, re-delivered under the same name): its
  ingest is launched again, a new version of its partition (``run_key`` carries the fingerprint);
- a known dump with the same fingerprint: nothing;
- a partition the cursor has not seen (added before its file arrived, ingested by ``memport run``,
  a lost cursor): launched unless the store's live import read these very bytes, judged cheaply
  (:func:`~pipelines.store.ingest.imported_as_is`: same size, file older than that import);
- a partition whose file is gone: named in a warning (once) and in every quiet tick's skip reason.

The dumps one tick launches are grouped into runs of up to ``MAX_DUMPS_PER_RUN`` consecutive
partitions (a partition key range, as a backfill's runs): a landing zone that receives 200 dumps at
once costs four runs' start-up, not 200. Each dump is still committed, reported and checked on its
own (see the ingest assets); a lone dump is a run of its own partition, as before.
"""

# No `from __future__ import annotations` here: Dagster reads these annotations at definition
# time to inject the context and resources, and cannot resolve them from strings.

import hashlib
import json
from typing import Any

import dagster as dg

from connectors import registry
from pipelines.orchestration.assets import MAX_DUMPS_PER_RUN
from pipelines.orchestration.jobs import INGEST_JOBS, ingest_job_name
from pipelines.orchestration.partitions import dumps_partitions, dumps_partitions_name, key_ranges
from pipelines.orchestration.resources import EpisodeStoreResource, ImportSettings, LandingZone
from pipelines.store.episodes import EpisodeStore, dump_key
from pipelines.store.ingest import DumpFingerprint, dump_fingerprints, imported_as_is

CURSOR_VERSION = 1
#: Run tags: why the run was launched, and the dump as the sensor saw it.
REASON_TAG = "memport/landing"
FINGERPRINT_TAG = "memport/dump_fingerprint"
#: Dagster's tags for a run over a range of partitions (what a backfill's runs carry).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def _load_cursor(raw: str | None) -> dict[str, Any]:
    try:
        cursor = json.loads(raw) if raw else {}
    except ValueError:
        cursor = {}
    if not isinstance(cursor, dict) or cursor.get("v") != CURSOR_VERSION:
        return {"v": CURSOR_VERSION, "seen": {}, "missing": {}}
    return cursor


class _LiveImports:
    """The store's live imports for the tenant, read once per tick and only if needed."""

    def __init__(self, store: EpisodeStore, tenant_id: str) -> None:
        self.store, self.tenant_id = store, tenant_id
        self._by_partition: dict[tuple[str, str], dict[str, Any]] | None = None

    def get(self, system: str, relpath: str) -> dict[str, Any] | None:
        if self._by_partition is None:
            self._by_partition = {
                (m["source_system"], m["dump_key"]): m
                for live, m in self.store.manifests()
                if live and m["tenant_id"] == self.tenant_id
            }
        return self._by_partition.get((system, dump_key(relpath)))


def _request(system: str, wanted: dict[str, tuple[DumpFingerprint, str]], keys: list[str]) -> dg.RunRequest:
    """One run over ``keys`` (consecutive partitions); its ``run_key`` names the dumps as they are
    now, so a re-delivered dump is a new key (Dagster drops a request whose run_key was used)."""
    if len(keys) == 1:
        fingerprint, reason = wanted[keys[0]]
        return dg.RunRequest(
            run_key=f"{system}:{keys[0]}:{fingerprint.digest()}",
            job_name=ingest_job_name(system),
            partition_key=keys[0],
            tags={REASON_TAG: reason, FINGERPRINT_TAG: fingerprint.text()},
        )
    digests = hashlib.blake2b("\n".join(f"{k}:{wanted[k][0].digest()}" for k in keys).encode(), digest_size=8)
    return dg.RunRequest(
        run_key=f"{system}:{keys[0]}..{keys[-1]}:{len(keys)}:{digests.hexdigest()}",
        job_name=ingest_job_name(system),
        tags={
            RANGE_START_TAG: keys[0],
            RANGE_END_TAG: keys[-1],
            REASON_TAG: ", ".join(sorted({wanted[k][1] for k in keys})),
            FINGERPRINT_TAG: f"{len(keys)} dumps",
        },
    )


def _names(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


@dg.sensor(
    name="landing_sensor",
    jobs=INGEST_JOBS,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Ingests every new dump under <landing>/<system>/ (adding its partition) and every dump "
        "re-delivered with other content (size, modification time, ETag/checksum changed); names the "
        "partitions whose file is missing."
    ),
)
def landing_sensor(
    context: dg.SensorEvaluationContext,
    landing: LandingZone,
    episode_store: EpisodeStoreResource,
    import_settings: ImportSettings,
) -> dg.SensorResult:
    location = landing.location()
    cursor = _load_cursor(context.cursor)
    live = _LiveImports(episode_store.store(), import_settings.tenant_id)
    partition_requests: list[dg.AddDynamicPartitionsRequest] = []
    runs: list[dg.RunRequest] = []
    seen_now: dict[str, dict[str, str]] = {}
    missing_now: dict[str, list[str]] = {}
    for system in registry.CONNECTORS:
        found = dump_fingerprints(location, system)
        ordered = list(context.instance.get_dynamic_partitions(dumps_partitions_name(system)))
        known = set(ordered)
        seen = cursor["seen"].get(system, {})
        new, changed, unseen = [], [], []
        wanted: dict[str, tuple[DumpFingerprint, str]] = {}
        for relpath, fingerprint in sorted(found.items()):
            digest = fingerprint.digest()
            if relpath not in known:
                new.append(relpath)
                wanted[relpath] = (fingerprint, "new")
            elif seen.get(relpath) == digest:
                pass
            elif relpath in seen:
                changed.append(relpath)
                wanted[relpath] = (fingerprint, "changed")
            elif not imported_as_is(live.get(system, relpath), fingerprint):
                unseen.append(relpath)
                wanted[relpath] = (fingerprint, "not imported as it is")
        # the new partitions are added in this order, after the known ones: ranges cover exactly
        # the dumps wanted
        order = [*ordered, *new]
        runs += [_request(system, wanted, keys) for keys in key_ranges(order, wanted, MAX_DUMPS_PER_RUN)]
        seen_now[system] = {relpath: fp.digest() for relpath, fp in found.items()}
        if new:
            partition_requests.append(dumps_partitions(system).build_add_request(new))
            context.log.info(f"{system}: {len(new)} new dump(s): {_names(new)}")
        if changed:
            context.log.info(
                f"{system}: {len(changed)} dump(s) re-delivered with other content: {_names(changed)}"
            )
        if unseen:
            context.log.info(
                f"{system}: {len(unseen)} partition(s) not ingested as their file now is: {_names(unseen)}"
            )
        missing = sorted(known - set(found))
        if missing:
            missing_now[system] = missing
            noticed = sorted(set(missing) - set(cursor["missing"].get(system, [])))
            if noticed:
                folder = location.uri(location.path(system))
                context.log.warning(
                    f"{system}: {len(noticed)} partition(s) have no file in {folder} (moved or deleted; "
                    f"their last import stays in the store): {_names(noticed)}"
                )
    new_cursor = json.dumps(
        {"v": CURSOR_VERSION, "seen": seen_now, "missing": missing_now}, separators=(",", ":")
    )
    skip = None
    if not runs:
        gone = [f"{system}/{key}" for system, keys in missing_now.items() for key in keys]
        skip = "No new or changed dump." + (
            f" {len(gone)} partition(s) have no file: {_names(gone)}." if gone else ""
        )
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=partition_requests,
        cursor=new_cursor,
        skip_reason=skip,
    )
