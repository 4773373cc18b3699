"""The Dagster wiring. Importing any of it first runs the one warning filter below."""

from __future__ import annotations

import warnings

import dagster as dg

# Dagster 1.13 warns each time an asset check spec with a partitions_def is built (PreviewWarning:
# the snapshot check is partitioned by day, the ingest checks by dump) and each time an asset gets a
# backfill_policy (BetaWarning: the ingest assets take many dumps per backfill run). memport uses
# both on purpose and its tests pin their behaviour; the warnings repeat on every definitions load
# (dozens of times under `dagster dev`) and read like errors to a newcomer. Only those messages of
# those categories are ignored, here, before any definition is built; every other warning stays.
warnings.filterwarnings(
    "ignore",
    message=r"Specifying a partitions_def on an AssetCheckSpec is currently in preview",
    category=dg.PreviewWarning,
)
warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy`", category=dg.BetaWarning)
