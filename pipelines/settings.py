"""The environment variables memport reads, and their defaults (the repository's ``.env`` sets the
same values). See the README's configuration table."""

from __future__ import annotations

import os

DEFAULTS = {
    "MEMPORT_LANDING_URL": "data/landing",
    "MEMPORT_STORE_URL": "data/store",
    "MEMPORT_CATALOG_PATH": "data/episodes.duckdb",
    "MEMPORT_TENANT_ID": "default",
    "MEMPORT_SCOPE_TEMPLATES": "",
    "MEMPORT_EXPORTS_URL": "data/exports",
    "MEMPORT_EXPORT_SPECS": "",
    # backups (pipelines.backups.snapshot): where snapshots go, and how many retention keeps
    "MEMPORT_BACKUP_URL": "data/backups",
    "MEMPORT_KEEP_DAILY": "7",
    "MEMPORT_KEEP_MONTHLY": "12",
    # the first day of the daily snapshot partitions; empty: the store's first import day
    "MEMPORT_SNAPSHOT_START": "",
}


def setting(name: str) -> str:
    """The variable's value, or its default when it is not set."""
    return os.environ.get(name, DEFAULTS[name])
