"""fsspec locations: every place memport reads or writes is a URL; local paths are just URLs too."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from connectors.errors import ConfigError


@dataclass(frozen=True)
class Location:
    """A filesystem and a root path on it, from a URL such as ``data/store`` or ``s3://b/store``."""

    fs: AbstractFileSystem
    root: str

    @classmethod
    def from_url(cls, url: str, **storage_options: object) -> Location:
        if not url:
            raise ConfigError("an empty location URL was given; set it to a path or fsspec URL")
        try:
            fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"cannot open location {url!r}: {exc}") from exc
        if isinstance(fs, LocalFileSystem):
            root = str(Path(root).resolve())
        return cls(fs, root.rstrip("/"))

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def uri(self, path: str) -> str:
        """The URL DuckDB and people use for ``path``: plain for local files, with protocol else."""
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def url(self) -> str:
        return self.uri(self.root)

    def register_with(self, con: duckdb.DuckDBPyConnection) -> None:
        """Give DuckDB access to this filesystem (httpfs cannot be installed here; fsspec can)."""
        if not self.is_local:
            con.register_filesystem(self.fs)

    def write_atomic(self, path: str, data: bytes) -> None:
        """Make ``path`` appear whole or not at all: rename locally, one PUT on object stores."""
        if self.is_local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)
