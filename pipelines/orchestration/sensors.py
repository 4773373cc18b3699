"""The landing sensor: a new dump file in ``<landing>/<system>/`` becomes a partition and a run."""

# No `from __future__ import annotations` here: Dagster reads these annotations at definition
# time to inject the context and resources, and cannot resolve them from strings.

import dagster as dg

from connectors import registry
from pipelines.orchestration.jobs import INGEST_JOBS, ingest_job_name
from pipelines.orchestration.partitions import dumps_partitions, dumps_partitions_name
from pipelines.orchestration.resources import LandingZone
from pipelines.store.ingest import discover_dumps


@dg.sensor(
    name="landing_sensor",
    jobs=INGEST_JOBS,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a partition per new dump under <landing>/<system>/ and launches its ingest.",
)
def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZone) -> dg.SensorResult:
    location = landing.location()
    requests: list[dg.AddDynamicPartitionsRequest] = []
    runs: list[dg.RunRequest] = []
    for system in registry.CONNECTORS:
        partitions = dumps_partitions(system)
        known = set(context.instance.get_dynamic_partitions(dumps_partitions_name(system)))
        new = [d for d in discover_dumps(location, system) if d not in known]
        if not new:
            continue
        context.log.info(f"{system}: {len(new)} new dump(s): {', '.join(new[:5])}")
        requests.append(partitions.build_add_request(new))
        runs += [
            dg.RunRequest(run_key=f"{system}:{key}", job_name=ingest_job_name(system), partition_key=key)
            for key in new
        ]
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=requests)
