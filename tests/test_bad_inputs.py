"""Each system's corpus of bad inputs, ``tests/fixtures/<system>/bad/``, through the real store.

``bad/expected.json`` maps each file to its exact counts and rejects by reason, or to ``error``
(a pattern the :class:`DumpFormatError` message must match: the dump is not that system's format,
so the import fails before committing anything). Every file must hold
accepted + rejected + duplicate = read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from connectors import registry
from connectors.errors import DumpFormatError
from pipelines.store.episodes import EpisodeStore
from pipelines.store.ingest import ingest_dump
from pipelines.store.locations import Location
from tests.conftest import FIXTURES

CASES = [
    (system, name, expected)
    for system in registry.CONNECTORS
    if (FIXTURES / system / "bad" / "expected.json").exists()
    for name, expected in json.loads(
        (FIXTURES / system / "bad" / "expected.json").read_text(encoding="utf-8")
    ).items()
]


def test_every_bad_file_has_an_expectation() -> None:
    for system in registry.CONNECTORS:
        folder = FIXTURES / system / "bad"
        if not folder.exists():
            continue
        listed = set(json.loads((folder / "expected.json").read_text(encoding="utf-8")))
        present = {p.name for p in folder.iterdir() if p.name != "expected.json"}
        assert listed == present, system


@pytest.mark.parametrize(("system", "name", "expected"), CASES, ids=[f"{s}/{n}" for s, n, _ in CASES])
def test_bad_input_is_accounted_for(system: str, name: str, expected: dict[str, Any], tmp_path: Path) -> None:
    connector = registry.get(system)
    landing = Location.from_url(str(tmp_path / "landing"))
    (tmp_path / "landing" / system).mkdir(parents=True)
    shutil.copyfile(FIXTURES / system / "bad" / name, tmp_path / "landing" / system / name)
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    template = expected.get("scope_template", connector.default_scope_template)
    if "error" in expected:
        with pytest.raises(DumpFormatError, match=expected["error"]):
            ingest_dump(store, landing, system, name, tenant_id="acme", scope_template=template)
        assert not list((tmp_path / "store").rglob("*.json")), "a failed import left a manifest"
        return
    result = ingest_dump(store, landing, system, name, tenant_id="acme", scope_template=template)
    counts = result.counts
    assert counts["read"] == counts["accepted"] + counts["rejected"] + counts["duplicate"]
    keys = ("read", "accepted", "rejected", "duplicate", "unread_bytes")
    assert counts == {k: expected[k] for k in keys if k in expected}
    assert result.manifest["rejects_by_reason"] == expected["reasons"]
