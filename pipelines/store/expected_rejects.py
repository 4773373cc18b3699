"""Rejects a landing zone declares expected: ``<landing>/expected_rejects.yaml``.

Some dumps carry records broken on purpose (the samples under ``data/landing/`` show what each
kind of reject looks like). The file names them, per dump, with how many of each reason are
expected and why::

    mem0/get_all_v1_u481.json:
      why: one record of each kind the connector rejects
      rejects: {bad_timestamp: 1, unresolved_scope: 1, wrong_type: 1}

The ``reject_rate`` check of a listed dump counts only the rejects beyond the declared ones: the
declared rejects are reported (metadata and description) as expected, not hidden. A reason not
declared, or more of a reason than declared, counts as usual, so a declared dump that turns bad
still warns. Dumps not listed are judged as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from connectors.errors import ConfigError
from connectors.schema import RejectReason
from pipelines.store.locations import Location

FILE_NAME = "expected_rejects.yaml"
_REASONS = frozenset(r.value for r in RejectReason)


@dataclass(frozen=True)
class Expected:
    """The rejects one dump is declared to have."""

    rejects: dict[str, int]
    why: str
    declared_in: str

    def unexpected(self, rejects_by_reason: dict[str, int]) -> dict[str, int]:
        """The rejects beyond the declared ones, by reason."""
        extra = {r: n - self.rejects.get(r, 0) for r, n in rejects_by_reason.items()}
        return {r: n for r, n in extra.items() if n > 0}


@dataclass(frozen=True)
class ExpectedRejects:
    """Every dump's declared rejects (keys ``<system>/<path under the system's folder>``)."""

    by_dump: dict[str, Expected] = field(default_factory=dict)

    def get(self, system: str, relpath: str) -> Expected | None:
        return self.by_dump.get(f"{system}/{relpath}")


def load(landing: Location) -> ExpectedRejects:
    """The landing zone's declaration; none when the file does not exist.

    A file that is not what the module docstring says is an error naming the file and the entry:
    a typo must not quietly turn a check back on (or off).
    """
    path = landing.path(FILE_NAME)
    if not landing.fs.isfile(path):
        return ExpectedRejects()
    where = landing.uri(path)
    try:
        raw: Any = yaml.safe_load(landing.fs.cat_file(path)) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}; fix or delete it") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of <system>/<dump path> to entries")
    return ExpectedRejects({str(dump): _entry(where, str(dump), entry) for dump, entry in raw.items()})


def _entry(where: str, dump: str, entry: Any) -> Expected:
    def bad(what: str) -> ConfigError:
        return ConfigError(
            f"{where}, entry {dump!r}: {what}; an entry is "
            "{why: <text>, rejects: {<reason>: <count>, ...}} (reasons: connectors/schema.py RejectReason)"
        )

    if "/" not in dump:
        raise bad("the key must be <system>/<path of the dump under the system's folder>")
    if not isinstance(entry, dict) or set(entry) - {"why", "rejects"}:
        raise bad("not a mapping of `why` and `rejects`")
    rejects, why = entry.get("rejects"), entry.get("why")
    if not isinstance(why, str) or not why.strip():
        raise bad("`why` is missing: say why these records are expected to be rejected")
    if not isinstance(rejects, dict) or not rejects:
        raise bad("`rejects` is missing or empty")
    for reason, n in rejects.items():
        if reason not in _REASONS:
            raise bad(f"unknown reject reason {reason!r}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise bad(f"the count of {reason!r} must be a positive integer, not {n!r}")
    return Expected({str(r): int(n) for r, n in rejects.items()}, why.strip(), where)
