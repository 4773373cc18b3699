"""The launchpad's export config: drop-downs of the allowed values (the request parser's own lists),
help on every field, and a wrong value refused at launch, before a run exists."""

from __future__ import annotations

import dagster as dg
import pytest

from connectors.schema import EPISODE_TYPES, PRIORITIES, SOURCE_SYSTEMS
from pipelines.exports.request import COMPRESSIONS, FORMATS, KNOWN_KEYS, PROFILES
from pipelines.orchestration.definitions import defs
from pipelines.orchestration.exports import ExportRunConfig


def _config_field(name: str) -> dg.Field:
    job = defs.resolve_job_def("adhoc_export")
    ops = job.run_config_schema.config_type.fields["ops"].config_type  # type: ignore[attr-defined]
    config = ops.fields["run_export"].config_type.fields["config"]
    return config.config_type.fields[name]


@pytest.mark.parametrize(
    ("field", "allowed"),
    [
        ("format", FORMATS),
        ("profile", tuple(PROFILES)),
        ("compression", COMPRESSIONS),
        ("types", EPISODE_TYPES),
        ("source_system", SOURCE_SYSTEMS),
        ("priority", PRIORITIES),
    ],
)
def test_choice_fields_are_enums_of_the_parsers_values(field: str, allowed: tuple[str, ...]) -> None:
    config_type = _config_field(field).config_type
    while not isinstance(config_type, dg.Enum):  # Noneable / Array around the enum
        config_type = config_type.inner_type  # type: ignore[attr-defined]
    assert tuple(v.config_value for v in config_type.enum_values) == allowed


def test_every_field_has_help_and_the_config_mirrors_the_request() -> None:
    assert set(ExportRunConfig.model_fields) == KNOWN_KEYS
    undocumented = [name for name in KNOWN_KEYS if not _config_field(name).description]
    assert undocumented == []
    assert "json, ndjson, csv, markdown" in str(_config_field("format").description)


def test_a_wrong_format_is_refused_at_launch_naming_the_field_and_the_allowed_values() -> None:
    job = defs.resolve_job_def("adhoc_export")
    config = {"format": "parquet", "compression": "lz4", "types": ["decision", "memo"]}
    with pytest.raises(dg.DagsterInvalidConfigError) as refused:
        dg.validate_run_config(job, {"ops": {"run_export": {"config": config}}})
    text = str(refused.value)
    assert "config:format not in enum type ExportFormat[json, ndjson, csv, markdown] got parquet" in text
    assert "config:compression not in enum type Compression[gzip, zstd] got lz4" in text
    assert "config:types[1] not in enum type EpisodeType[" in text and "got memo" in text


def test_valid_config_becomes_the_request() -> None:
    config = ExportRunConfig(format="csv", profile="mnueron", types=["decision"], priority="HIGH")  # type: ignore[arg-type]
    request = config.request("acme")
    assert (request.format, request.profile, request.filters.types) == ("csv", "mnueron", ("decision",))
    assert request.filters.priority == "HIGH" and request.filters.tenant_id == "acme"
    job = defs.resolve_job_def("adhoc_export")
    ok = {"format": "csv", "profile": "mnueron", "types": ["decision"], "priority": "HIGH"}
    assert dg.validate_run_config(job, {"ops": {"run_export": {"config": ok}}})
