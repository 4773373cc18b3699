"""Resources: where the landing zone, the store and the catalog are, and how dumps are imported.

Values come from environment variables (``dg.EnvVar``, resolved at run launch, never at import);
the repository's ``.env`` gives every one a default under ``data/``. See the README's
configuration table.
"""

from __future__ import annotations

import json
import os

import dagster as dg

from connectors.errors import ConfigError
from pipelines.locations import Location
from pipelines.settings import DEFAULTS
from pipelines.store import EpisodeStore


class LandingZone(dg.ConfigurableResource):
    """Where peer systems' dumps arrive: ``<url>/<system>/<dump file>``."""

    url: str

    def location(self) -> Location:
        return Location.from_url(self.url)


class EpisodeStoreResource(dg.ConfigurableResource):
    """The episode store (any fsspec URL) and its DuckDB catalog (a local file)."""

    url: str
    catalog_path: str
    #: Hours a replaced data file is kept, so open catalogs never lose a file under them.
    vacuum_grace_hours: float = 24.0

    def store(self) -> EpisodeStore:
        return EpisodeStore.from_url(self.url)


class ImportSettings(dg.ConfigurableResource):
    """Tenant and per-system scope templates applied to every import."""

    tenant_id: str
    #: JSON object system → scope template, e.g. {"mem0": "org:acme/user:{user_id}"}; empty for
    #: each connector's default.
    scope_templates: str = ""

    def scope_template(self, system: str) -> str | None:
        if not self.scope_templates.strip():
            return None
        try:
            templates = json.loads(self.scope_templates)
        except ValueError as exc:
            raise ConfigError(f"MEMPORT_SCOPE_TEMPLATES is not a JSON object: {exc}") from exc
        if not isinstance(templates, dict):
            raise ConfigError("MEMPORT_SCOPE_TEMPLATES must be a JSON object: system → template")
        return templates.get(system)


def _env(name: str) -> str:
    """The variable, resolved by Dagster at run launch when it is set; its default otherwise."""
    return dg.EnvVar(name) if name in os.environ else DEFAULTS[name]


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    return {
        "landing": LandingZone(url=_env("MEMPORT_LANDING_URL")),
        "episode_store": EpisodeStoreResource(
            url=_env("MEMPORT_STORE_URL"), catalog_path=_env("MEMPORT_CATALOG_PATH")
        ),
        "import_settings": ImportSettings(
            tenant_id=_env("MEMPORT_TENANT_ID"), scope_templates=_env("MEMPORT_SCOPE_TEMPLATES")
        ),
        "backup": backup_resource_from_env(),
    }


class BackupResource(dg.ConfigurableResource):
    """Where snapshots of the store go (any fsspec URL), and how many retention keeps."""

    url: str
    keep_daily: int = 7
    keep_monthly: int = 12

    def location(self) -> Location:
        return Location.from_url(self.url)


def _env_int(name: str) -> int:
    return dg.EnvVar.int(name) if name in os.environ else int(DEFAULTS[name])


def backup_resource_from_env() -> BackupResource:
    return BackupResource(
        url=_env("MEMPORT_BACKUP_URL"),
        keep_daily=_env_int("MEMPORT_KEEP_DAILY"),
        keep_monthly=_env_int("MEMPORT_KEEP_MONTHLY"),
    )
