"""The connector registry: peer-system name → connector. An explicit list, no discovery magic."""

from __future__ import annotations

from connectors import cortexdb, letta, mem0, memsolus, mnueron, openai, zep
from connectors.base import Connector
from connectors.errors import ConfigError

CONNECTORS: dict[str, Connector] = {
    connector.name: connector
    for connector in (
        cortexdb.CONNECTOR,
        letta.CONNECTOR,
        mem0.CONNECTOR,
        memsolus.CONNECTOR,
        mnueron.CONNECTOR,
        openai.CONNECTOR,
        zep.CONNECTOR,
    )
}


def get(name: str) -> Connector:
    try:
        return CONNECTORS[name]
    except KeyError:
        known = ", ".join(sorted(CONNECTORS))
        raise ConfigError(f"no connector for system {name!r}; known systems: {known}") from None
