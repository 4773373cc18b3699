"""Helpers for connector unit tests: read a dump held in fsspec's memory filesystem, and the
rows of the result in a form that compares against literal expectations."""

from __future__ import annotations

import uuid
from typing import Any

import fsspec
import polars as pl

from connectors.base import Connector
from connectors.schema import EPISODE_SCHEMA, REJECT_SCHEMA


def read_memory(
    connector: Connector, data: str | bytes, name: str = "dump", **kw: Any
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read ``data`` as the dump ``name`` from fsspec's memory filesystem: (episodes, rejects),
    after checking that every record read is one or the other."""
    fs = fsspec.filesystem("memory")
    path = f"/{connector.name}-{uuid.uuid4().hex}/{name}"
    fs.pipe_file(path, data.encode("utf-8") if isinstance(data, str) else data)
    kw.setdefault("tenant_id", "acme")
    batches = list(connector.read(fs, path, **kw))
    episodes = pl.concat([EPISODE_SCHEMA.to_frame(), *(b.episodes for b in batches)])
    rejects = pl.concat([REJECT_SCHEMA.to_frame(), *(b.rejects for b in batches)])
    assert sum(b.read for b in batches) == episodes.height + rejects.height
    return episodes, rejects


def rows(frame: pl.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    """The given columns of every row, timestamps as ISO text."""
    return [
        {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}
        for row in frame.select(columns).to_dicts()
    ]


def reject_rows(rejects: pl.DataFrame) -> list[tuple[int, str, str]]:
    return list(
        zip(rejects["dump_record"], rejects["reason"].cast(pl.String), rejects["detail"], strict=True)
    )
