"""One dynamic partition per dump file, per peer system; the landing sensor adds them."""

from __future__ import annotations

import dagster as dg


def dumps_partitions_name(system: str) -> str:
    return f"{system}_dumps"


def dumps_partitions(system: str) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=dumps_partitions_name(system))
