"""One dynamic partition per dump file, per peer system; the landing sensor adds them. Runs of
many dumps (backfills, the sensor, ``memport run``) cover ranges of consecutive partitions."""

from __future__ import annotations

from collections.abc import Collection

import dagster as dg


def dumps_partitions_name(system: str) -> str:
    return f"{system}_dumps"


def dumps_partitions(system: str) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=dumps_partitions_name(system))


def key_ranges(ordered: list[str], wanted: Collection[str], size: int) -> list[list[str]]:
    """``wanted`` as runs of consecutive keys of ``ordered`` (the partitions in Dagster's order: a
    dynamic partition set's is the order keys were added), each at most ``size`` long. A key of
    ``ordered`` that is not wanted ends a range, so a range's start..end covers exactly the dumps
    meant; wanted keys that are not partitions are left out."""
    chosen = set(wanted)
    ranges: list[list[str]] = []
    current: list[str] = []
    for key in ordered:
        if key in chosen and len(current) < size:
            current.append(key)
            continue
        if current:
            ranges.append(current)
        current = [key] if key in chosen else []
    if current:
        ranges.append(current)
    return ranges
