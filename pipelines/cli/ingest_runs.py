"""``memport run``'s ingest: each system's dumps in runs of up to ``MAX_DUMPS_PER_RUN`` partitions
(a partition key range, as a backfill's runs), so Dagster's per-run overhead (about a second) is
paid per run, not per dump. Each dump is still committed, skipped or failed on its own; the
outcome of every dump of a run is read back from the run's events (materializations per
partition; the failed ones from the run's failure metadata).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.cli.errors import first_error


@dataclass(frozen=True)
class DumpOutcome:
    """One dump of a run: its materialization's metadata values, or why it failed."""

    key: str
    values: Mapping[str, Any] | None
    error: str | None


def run_range(
    job: Any, instance: Any, node: str, keys: list[str], run_config: Mapping[str, Any]
) -> Iterator[DumpOutcome]:
    """Run the ingest job over ``keys`` (consecutive partitions) in one run; one outcome per key."""
    if len(keys) == 1:
        result = job.execute_in_process(
            instance=instance, partition_key=keys[0], raise_on_error=False, run_config=run_config
        )
    else:
        tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
        result = job.execute_in_process(
            instance=instance, tags=tags, raise_on_error=False, run_config=run_config
        )
    done = {
        m.partition: {k: v.value for k, v in m.metadata.items()}
        for m in result.asset_materializations_for_node(node)
    }
    errors = {} if result.success else _dump_errors(result)
    for key in keys:
        if key in done:
            yield DumpOutcome(key, done[key], None)
        else:  # a dump without a materialization failed: with its own error, else the run's
            yield DumpOutcome(key, None, errors.get(key) or first_error(result))


def _dump_errors(result: Any) -> dict[str, str]:
    """``{dump: "Class: message"}`` from the failure of a run of several dumps (``errors``)."""
    for event in result.all_events:
        data = event.step_failure_data if event.is_failure else None
        meta = data.user_failure_data.metadata if data and data.user_failure_data else {}
        if "errors" in meta:
            return {str(k): _one_line(str(v)) for k, v in dict(meta["errors"].value).items()}
    return {}


def _one_line(text: str, lines: int = 3) -> str:
    """The first ``lines`` non-blank lines of an error, on one line (as ``describe_error``)."""
    return " ".join([line.strip() for line in text.splitlines() if line.strip()][:lines]) or "(no message)"
