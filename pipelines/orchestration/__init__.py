"""The Dagster wiring. Importing any of it first runs the one warning filter below."""

from __future__ import annotations

import warnings

import dagster as dg

# Dagster 1.13 warns (PreviewWarning) each time an asset check spec with a partitions_def is built:
# the snapshot check is partitioned by day, and the ingest checks by dump. memport uses that
# feature on purpose and its tests pin its behaviour; the warning repeats on every definitions load
# (dozens of times under `dagster dev`) and reads like an error to a newcomer. Only that message of
# that category is ignored, here, before any definition is built; every other warning stays.
warnings.filterwarnings(
    "ignore",
    message=r"Specifying a partitions_def on an AssetCheckSpec is currently in preview",
    category=dg.PreviewWarning,
)
