"""A run of many dump partitions (what a backfill launches under the ingest assets' BackfillPolicy):
each dump committed, reported and checked on its own; a broken dump fails alone and is named.

Runs here are in-process runs with a partition range, tagged as the backfill daemon tags them;
``tests/test_backfill_dagster.py`` launches a real backfill through the webserver.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from connectors.errors import ConfigError
from pipelines.orchestration.assets import INGEST_ASSETS, MAX_DUMPS_PER_RUN, ingest_asset_key
from pipelines.orchestration.resources import EpisodeStoreResource, ImportSettings, LandingZone
from pipelines.store import expected_rejects
from pipelines.store.locations import Location
from tests.conftest import FIXTURES, put

MEM0 = ingest_asset_key("mem0")
PAGE = (FIXTURES / "mem0" / "paginated_v3.json").read_bytes()  # 3 read: 2 accepted, 1 duplicate


def _resources(base: Path) -> dict[str, Any]:
    return {
        "landing": LandingZone(url=str(base / "landing")),
        "episode_store": EpisodeStoreResource(url=str(base / "store"), catalog_path=str(base / "c.duckdb")),
        "import_settings": ImportSettings(tenant_id="acme"),
    }


def _mem0_records(n: int, bad: int) -> str:
    good = [
        {"id": f"m{i}", "memory": f"fact {i}", "user_id": "u1", "created_at": "2025-01-02T03:04:05Z"}
        for i in range(n - bad)
    ]
    broken = [{"id": f"b{i}", "memory": {"not": "text"}, "user_id": "u1"} for i in range(bad)]
    return json.dumps(good + broken)


def _run(
    base: Path, instance: dg.DagsterInstance, keys: list[str], **config: Any
) -> dg.ExecuteInProcessResult:
    """One run of the mem0 asset over ``keys`` (a partition range, as a backfill run is)."""
    mem0 = next(a for a in INGEST_ASSETS if a.key == MEM0)
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    run_config = {"ops": {MEM0.to_python_identifier(): {"config": config}}} if config else None
    return dg.materialize(
        [mem0],
        resources=_resources(base),
        instance=instance,
        tags=tags,
        run_config=run_config,
        raise_on_error=False,
    )


def _materialized(instance: dg.DagsterInstance) -> dict[str, dict[str, Any]]:
    """The latest materialization's metadata, per partition."""
    records = instance.fetch_materializations(MEM0, limit=1000).records
    latest: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r.storage_id):
        mat = record.asset_materialization
        assert mat is not None and mat.partition is not None
        latest[mat.partition] = {k: v.value for k, v in mat.metadata.items()}
    return latest


def _evaluations(instance: dg.DagsterInstance, check: str) -> dict[str, Any]:
    """The latest evaluation of ``check`` per partition (the check's partitioned history)."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(MEM0, check), limit=1000
    )
    out: dict[str, Any] = {}
    for record in sorted(records, key=lambda r: r.id):
        evaluation = record.evaluation
        if not isinstance(evaluation, dg.AssetCheckEvaluation):
            continue  # the run's plan (a failed run's plan stays)
        assert evaluation.partition is not None, "every evaluation names its dump"
        out[evaluation.partition] = evaluation
    return out


def test_ingest_assets_take_many_dumps_per_backfill_run() -> None:
    for asset in INGEST_ASSETS:
        policy = asset.backfill_policy
        assert policy is not None and policy.max_partitions_per_run == MAX_DUMPS_PER_RUN
        assert 50 <= MAX_DUMPS_PER_RUN <= 100
        for spec in asset.check_specs:
            assert spec.partitions_def == asset.partitions_def, f"{spec.name} is judged per dump"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_of_many_dumps_reports_each_dump_on_its_own(tmp_path: Path, workers: int) -> None:
    landing = Location.from_url(str(tmp_path / "landing"))
    keys = ["a.json", "b.json", "sub/c.json", "d.json"]
    for key in keys[:3]:
        put(landing, f"mem0/{key}", PAGE)
    put(landing, "mem0/d.json", _mem0_records(10, 5))  # half rejected: its check must warn
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("mem0_dumps", keys)

    assert _run(tmp_path, instance, keys, workers=workers).success
    mats = _materialized(instance)
    assert set(mats) == set(keys), "one materialization per dump"
    assert [mats[k]["accepted"] for k in keys] == [2, 2, 2, 5]
    assert [mats[k]["dagster/partition_row_count"] for k in keys] == [2, 2, 2, 5]
    assert {mats[k]["dagster/row_count"] for k in keys} == {11}, "row count: the asset's total"
    assert mats["sub/c.json"]["dump"].endswith("/landing/mem0/sub/c.json")

    rates = _evaluations(instance, "reject_rate")
    assert {k: e.passed for k, e in rates.items()} == {k: k != "d.json" for k in keys}
    assert rates["d.json"].metadata["dump"].value == "mem0/d.json"
    assert "mem0/d.json: 5 of 10 records rejected unexpectedly (50%; 5 wrong_type)" in str(
        rates["d.json"].description
    )
    balances = _evaluations(instance, "accounting_balances")
    assert all(e.passed for e in balances.values()) and set(balances) == set(keys)
    # each evaluation is tied to its own dump's materialization (else the UI shows it not evaluated)
    by_partition = {
        r.asset_materialization.partition: r.storage_id  # type: ignore[union-attr]
        for r in instance.fetch_materializations(MEM0, limit=1000).records
    }
    for key in keys:
        target = rates[key].target_materialization_data
        assert target is not None and target.storage_id == by_partition[key]

    # again: every dump unchanged, skipped, still one materialization each, counts unchanged
    assert _run(tmp_path, instance, keys).success
    again = _materialized(instance)
    assert all(again[k]["skipped_unchanged"] for k in keys)
    assert {again[k]["dagster/row_count"] for k in keys} == {11}


def test_a_broken_dump_fails_alone_and_is_named(tmp_path: Path) -> None:
    landing = Location.from_url(str(tmp_path / "landing"))
    keys = ["a.json", "broken.af", "c.json"]
    put(landing, "mem0/a.json", PAGE)
    put(landing, "mem0/broken.af", '{\n  "agents": [],\n  "blocks": []\n}')
    put(landing, "mem0/c.json", PAGE)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("mem0_dumps", keys)

    result = _run(tmp_path, instance, keys)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message  # type: ignore[union-attr]
    assert "1 of 3 dumps failed; the other 2 are committed and materialized" in message
    assert "  mem0/broken.af: DumpFormatError: file://" in message
    assert "/landing/mem0/broken.af: not a Mem0 memory dump" in message
    assert set(_materialized(instance)) == {"a.json", "c.json"}, "the good dumps are recorded"
    assert set(_evaluations(instance, "reject_rate")) == {"a.json", "c.json"}
    # and committed: the store has both
    from pipelines.store.episodes import EpisodeStore

    store = EpisodeStore.from_url(str(tmp_path / "store"))
    assert store.live_rows("mem0") == 4

    # fixed, the failed partition alone is re-run and joins the others
    put(landing, "mem0/broken.af", PAGE)
    assert _run(tmp_path, instance, ["broken.af"]).success
    assert set(_materialized(instance)) == set(keys)


def test_declared_rejects_pass_named_as_expected_and_the_rest_still_warn(tmp_path: Path) -> None:
    landing = Location.from_url(str(tmp_path / "landing"))
    keys = ["declared.json", "worse.json", "other.json"]
    put(landing, "mem0/declared.json", _mem0_records(4, 2))
    put(landing, "mem0/worse.json", _mem0_records(10, 5))  # declared 1, has 5
    put(landing, "mem0/other.json", _mem0_records(4, 2))  # same content, not declared
    put(
        landing,
        "expected_rejects.yaml",
        "mem0/declared.json:\n  why: broken on purpose\n  rejects: {wrong_type: 2}\n"
        "mem0/worse.json:\n  why: one broken on purpose\n  rejects: {wrong_type: 1}\n",
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("mem0_dumps", keys)
    assert _run(tmp_path, instance, keys).success
    rates = _evaluations(instance, "reject_rate")
    assert {k: e.passed for k, e in rates.items()} == {
        "declared.json": True,
        "worse.json": False,
        "other.json": False,
    }
    declared = rates["declared.json"]
    assert declared.metadata["reject_rate"].value == 0.5, "the rate is shown, not hidden"
    assert declared.metadata["expected_rejects"].value == {"wrong_type": 2}
    assert "2 of 4 records rejected (50%), all expected: broken on purpose" in str(declared.description)
    assert "4 of 10 records rejected unexpectedly" in str(rates["worse.json"].description)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("mem0/a.json: [1, 2]\n", "not a mapping of `why` and `rejects`"),
        ("mem0/a.json:\n  rejects: {wrong_type: 1}\n", "`why` is missing"),
        ("mem0/a.json:\n  why: x\n  rejects: {wrong_typo: 1}\n", "unknown reject reason 'wrong_typo'"),
        ("mem0/a.json:\n  why: x\n  rejects: {wrong_type: -1}\n", "must be a positive integer"),
        ("a.json:\n  why: x\n  rejects: {wrong_type: 1}\n", "<system>/<path of the dump"),
        ("mem0/a.json: {why: [\n", "is not valid YAML"),
    ],
)
def test_a_malformed_declaration_is_an_error_naming_the_file_and_entry(
    tmp_path: Path, text: str, complaint: str
) -> None:
    landing = Location.from_url(str(tmp_path))
    put(landing, "expected_rejects.yaml", text)
    with pytest.raises(ConfigError, match=r"expected_rejects\.yaml") as error:
        expected_rejects.load(landing)
    assert complaint in str(error.value)


def test_the_samples_declare_exactly_their_broken_on_purpose_records() -> None:
    """Every declared sample exists; the declarations load (a sample's check then passes, named)."""
    landing = Location.from_url(str(Path(__file__).parent.parent / "data" / "landing"))
    declared = expected_rejects.load(landing).by_dump
    assert declared, "data/landing/expected_rejects.yaml declares the samples' rejects"
    for dump in declared:
        assert landing.fs.isfile(landing.path(dump)), dump


def test_big_dumps_are_read_alone_after_the_others_and_progress_is_logged_in_the_callers_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from pipelines.store import ingest_many
    from pipelines.store.episodes import EpisodeStore

    landing = Location.from_url(str(tmp_path / "landing"))
    put(landing, "mem0/big.json", _mem0_records(200, 0))
    put(landing, "mem0/small1.json", PAGE)
    put(landing, "mem0/small2.json", PAGE)
    monkeypatch.setattr(ingest_many, "BIG_DUMP_BYTES", len(PAGE) + 1)
    monkeypatch.setattr(ingest_many, "PROGRESS_EVERY", 1)
    threads: set[str] = set()
    outcomes = list(
        ingest_many.ingest_dumps(
            EpisodeStore.from_url(str(tmp_path / "store")),
            landing,
            "mem0",
            ["big.json", "small1.json", "small2.json"],
            lambda relpath: ingest_many.DumpOptions(tenant_id="acme"),
            workers=2,
            log=lambda message: threads.add(threading.current_thread().name),
        )
    )
    assert [o.relpath for o in outcomes][-1] == "big.json", "the big dump waits for the small ones"
    assert all(o.error is None for o in outcomes)
    assert threads == {threading.current_thread().name}, "every message logged in the caller's thread"
