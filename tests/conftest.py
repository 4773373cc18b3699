"""Shared fixtures: a real S3-compatible server on 127.0.0.1, and store locations to test on."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.store.episodes import EpisodeStore
from pipelines.store.locations import Location

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's standalone server, started by the tests on a free loopback port."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="memport-test",
        AWS_SECRET_ACCESS_KEY="memport-test",
        AWS_DEFAULT_REGION="us-east-1",
    )
    # s3fs.mkdir(bucket) fails against the test server (location constraint): use boto3.
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="memport-test")
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh base URL, on local disk or on the S3-compatible server: same tests, same asserts."""
    if request.param == "local":
        return str(tmp_path / "base")
    request.getfixturevalue("s3_endpoint")
    return f"s3://memport-test/{uuid.uuid4().hex}"


@pytest.fixture
def landing(backend: str) -> Location:
    return Location.from_url(f"{backend}/landing")


@pytest.fixture
def store(backend: str) -> EpisodeStore:
    return EpisodeStore.from_url(f"{backend}/store")


def put(location: Location, relpath: str, data: bytes | str) -> str:
    """Write a file into a location (creating folders locally); returns its path."""
    path = location.path(relpath)
    if isinstance(data, str):
        data = data.encode("utf-8")
    if location.is_local:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    location.fs.pipe_file(path, data)
    return path


def memport_settings(base: Path) -> dict[str, str]:
    """Every memport location under ``base``, tenant ``default``, no export specs: what a test of the
    command line or the main job runs with (scope templates are the caller's choice)."""
    return {
        "MEMPORT_LANDING_URL": str(base / "landing"),
        "MEMPORT_STORE_URL": str(base / "store"),
        "MEMPORT_CATALOG_PATH": str(base / "episodes.duckdb"),
        "MEMPORT_TENANT_ID": "default",
        "MEMPORT_EXPORTS_URL": str(base / "exports"),
        "MEMPORT_EXPORT_SPECS": "",
        "MEMPORT_BACKUP_URL": str(base / "backups"),
        "DAGSTER_HOME": str(base / "dagster"),
    }


@pytest.fixture
def memport_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every memport setting under ``tmp_path`` in the environment (no scope templates), and
    ``tmp_path`` the working directory (so no ``.env`` is read): a command-line test's world."""
    monkeypatch.chdir(tmp_path)
    for name, value in memport_settings(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MEMPORT_SCOPE_TEMPLATES", "")
    return tmp_path
