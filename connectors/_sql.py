"""SQL fragments the connectors share: typed JSON projection and the canonical metadata object.

Canonical ``metadata`` is the source's own metadata object (its keys stay top-level, so export
filters on them work) plus one reserved key, ``_source``, holding every other field of the source
record that no canonical column took. Nothing the source had is dropped; JSON nulls are.

The common case is built by string concatenation from values DuckDB already parsed (no second
parse of the record). A record with keys the connector does not know, or whose metadata already
uses ``_source``, takes the exact path: ``json_merge_patch`` on the raw record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping


def json_struct(fields: Mapping[str, str]) -> str:
    """The ``json_transform`` structure for ``fields`` (name → DuckDB type)."""
    return json.dumps(dict(fields), separators=(",", ":"))


def sql_list(values: Iterable[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def metadata_sql(
    *,
    raw: str,
    meta: str,
    alias: str,
    kept: Iterable[str],
    known: Iterable[str],
    derived: Mapping[str, str] | None = None,
) -> str:
    """SQL for canonical metadata.

    ``meta`` is the JSON-typed source metadata; ``kept`` the JSON-typed fields of ``alias`` that go
    to ``_source`` verbatim; ``known`` every top-level key the connector maps or keeps;
    ``derived`` extra ``_source`` keys computed by SQL expressions yielding JSON (or NULL).
    """
    kept = list(kept)
    derived = dict(derived or {})
    known_keys = sorted(set(known) | set(kept))
    fields = [f"""CASE WHEN {alias}."{k}" IS NOT NULL THEN '"{k}":' || {alias}."{k}" END""" for k in kept]
    fields += [f"""'"{k}":' || ({expr})""" for k, expr in derived.items()]
    fields.append(f"""CASE WHEN json_type({meta}) <> 'OBJECT' THEN '"metadata":' || {meta} END""")
    drop = {k: None for k in known_keys if k not in kept}
    drop_all = json.dumps(drop, separators=(",", ":"))
    drop_keep_meta = json.dumps({k: v for k, v in drop.items() if k != "metadata"}, separators=(",", ":"))
    rest = (
        f"json_merge_patch({raw}, CASE WHEN json_type({meta}) = 'OBJECT' "
        f"THEN '{drop_all}' ELSE '{drop_keep_meta}' END)"
    )
    for k, expr in derived.items():
        rest = f"json_merge_patch({rest}, json_object('{k}', ({expr})::JSON))"
    return f"""CASE
      WHEN NOT list_has_all({sql_list(known_keys)}, json_keys({raw}))
        OR (json_type({meta}) = 'OBJECT' AND contains({meta}, '"_source"'))
      THEN json_merge_patch(
        CASE WHEN json_type({meta}) = 'OBJECT' THEN {meta} ELSE '{{}}' END,
        json_object('_source', {rest}))
      ELSE '{{"_source":{{' || concat_ws(',', {", ".join(fields)}) || '}}'
        || CASE WHEN json_type({meta}) = 'OBJECT' AND {meta} <> '{{}}'
                THEN ',' || substr({meta}, 2) ELSE '}}' END
    END"""
