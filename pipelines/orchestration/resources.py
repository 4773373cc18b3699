"""Resources: where the landing zone, the store and the catalog are, and how dumps are imported.

Values come from environment variables (``dg.EnvVar``, resolved at run launch, never at import);
the repository's ``.env`` gives every one a default under ``data/``. See the README's
configuration table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import dagster as dg

from connectors.base import path_captures
from connectors.errors import ConfigError
from pipelines.settings import DEFAULTS
from pipelines.store.episodes import EpisodeStore
from pipelines.store.locations import Location


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
    """Tenant and scope templates applied to every import."""

    tenant_id: str
    #: JSON object → scope template. Keys are a system (``"mem0"``) or a system and a glob on the
    #: dump's path under ``<landing>/<system>/`` (``"mem0/history*.db"``); a glob key wins over the
    #: system key, the longest matching glob over shorter ones. A glob's ``{name}`` parts capture
    #: one path segment each, for the template and the records (:meth:`path_fields`). Empty: each
    #: connector's default.
    scope_templates: str = ""

    def scope_template(self, system: str, relpath: str = "") -> str | None:
        return self._choose(system, relpath)[0]

    def path_fields(self, system: str, relpath: str) -> dict[str, str]:
        """Values the chosen glob key names in the dump's path: ``{"zep/sessions/{session_id}/*.json":
        …}`` gives ``{"session_id": "s-42"}`` for ``sessions/s-42/page-1.json`` (see
        ``connectors.base.path_captures``); empty when a system key or no key applies."""
        return self._choose(system, relpath)[1]

    def _choose(self, system: str, relpath: str) -> tuple[str | None, dict[str, str]]:
        if not self.scope_templates.strip():
            return None, {}
        try:
            templates = json.loads(self.scope_templates)
        except ValueError as exc:
            raise ConfigError(f"MEMPORT_SCOPE_TEMPLATES is not a JSON object: {exc}") from exc
        if not isinstance(templates, dict) or not all(isinstance(v, str) for v in templates.values()):
            raise ConfigError("MEMPORT_SCOPE_TEMPLATES must be a JSON object: system[/glob] → template")
        globs = {
            key: captured
            for key in templates
            if key.startswith(system + "/")
            and (captured := path_captures(key[len(system) + 1 :], relpath)) is not None
        }
        if globs:
            key = max(globs, key=len)
            return templates[key], globs[key]
        return templates.get(system), {}


class ExportTarget(dg.ConfigurableResource):
    """Where exports and their manifests go (``<url>/<id>/``), and the named specs file."""

    url: str
    #: YAML file of named export specs; empty for the samples shipped in pipelines/exports/.
    specs_path: str = ""

    def location(self) -> Location:
        return Location.from_url(self.url)


class ExportProgress:
    """Where an export reports progress (rows written, total); the command line swaps in its own."""

    def __init__(self, report: Callable[[int, int], None] | None = None) -> None:
        self.report = report


def _env(name: str) -> str:
    """The variable, resolved by Dagster at run launch when it is set; its default otherwise."""
    return dg.EnvVar(name) if name in os.environ else DEFAULTS[name]


def resources_from_env() -> dict[str, Any]:
    return {
        "landing": LandingZone(url=_env("MEMPORT_LANDING_URL")),
        "episode_store": EpisodeStoreResource(
            url=_env("MEMPORT_STORE_URL"), catalog_path=_env("MEMPORT_CATALOG_PATH")
        ),
        "import_settings": ImportSettings(
            tenant_id=_env("MEMPORT_TENANT_ID"), scope_templates=_env("MEMPORT_SCOPE_TEMPLATES")
        ),
        "export_target": ExportTarget(
            url=_env("MEMPORT_EXPORTS_URL"), specs_path=_env("MEMPORT_EXPORT_SPECS")
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
