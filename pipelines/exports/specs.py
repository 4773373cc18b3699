"""Named export specs: a YAML file of export requests, one per name (the repo ships samples)."""

from __future__ import annotations

from pathlib import Path

import yaml

from connectors.errors import ConfigError, ExportRequestError
from pipelines.exports.request import ExportRequest

#: The sample specs shipped with memport: one per format and profile.
BUNDLED = Path(__file__).with_name("specs.yaml")


def load_specs(path: str | Path | None, *, default_tenant: str) -> list[ExportRequest]:
    """Every spec of the file (the bundled samples when ``path`` is empty), validated."""
    source = Path(path) if path else BUNDLED
    try:
        doc = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"export specs {source}: cannot read: {exc}") from exc
    specs = doc.get("specs") if isinstance(doc, dict) else None
    if not isinstance(specs, list):
        raise ConfigError(f"export specs {source}: expected a top-level `specs:` list")
    requests, names = [], set()
    for n, spec in enumerate(specs):
        if not isinstance(spec, dict) or not spec.get("name"):
            raise ConfigError(f"export specs {source}: spec #{n + 1} needs a `name`")
        name = spec["name"]
        if name in names:
            raise ConfigError(f"export specs {source}: the name {name!r} is used twice")
        names.add(name)
        try:
            requests.append(ExportRequest.parse({"tenant_id": default_tenant} | spec))
        except ExportRequestError as exc:
            raise ConfigError(f"export specs {source}, spec {name!r}: {exc}") from exc
    return requests
