"""One dynamic partition per dump file, per peer system; the landing sensor adds them."""

from __future__ import annotations

import dagster as dg


def dumps_partitions(system: str) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{system}_dumps")
