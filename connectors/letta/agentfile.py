"""The records of a Letta agent file, for the ``letta`` connector: agents, their messages, memory
blocks and files become staged rows; tools, sources, groups, skills and MCP servers become skip
rejects. The mapping rules are in the module docstring of :mod:`connectors.letta`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.kit import records
from connectors.kit.records import Rejected, Row, ident, json_type, parse_time, str_list, text
from connectors.letta.document import Document
from connectors.letta.messages import Speaker, calls_send_message, message_text, send_message_calls
from connectors.schema import RejectReason

#: Agent types whose user-visible reply is only ever the ``send_message`` tool call.
SEND_MESSAGE_AGENTS = frozenset({"memgpt_agent", "memgpt_v2_agent"})
#: v2 top-level lists that are agent configuration: read, kept in rejects, never episodes.
CONFIG_LISTS = {"tools": "tool", "sources": "source", "groups": "group", "skills": "skill"}
#: Fields holding secret values (the names are kept, the values replaced).
_SECRET_FIELDS = ("tool_exec_environment_variables", "secrets")
_REDACTED = "<redacted>"
#: Lists inside an agent record whose items are records of their own.
_AGENT_RECORD_LISTS = ("messages", "core_memory", "tools")
SOURCE = "agent_file"


@dataclass
class Agent:
    where: str
    local_id: str | None
    name: str | None
    user_id: str | None
    speaker: Speaker
    in_context: set[Any] | None
    #: The document was cut inside this agent before its name and id: nothing says whose its
    #: finished records are, and the cut (the document's reject) is why they are lost.
    orphaned_by: Rejected | None = None


# --- helpers shared with the passages path ------------------------------------------------------


def without_vectors(record: dict[str, Any]) -> dict[str, Any]:
    """The record less its embedding vector (a model handle string under ``embedding`` stays)."""
    if isinstance(record.get("embedding"), list):
        return {k: v for k, v in record.items() if k != "embedding"}
    return record


def raw_text(record: Any) -> str | None:
    try:
        return records.dumps(without_vectors(record) if isinstance(record, dict) else record)
    except (RecursionError, ValueError):
        return None


def user_from_tags(tags: list[str] | None) -> str | None:
    """Letta has no user id; by convention an agent or passage is tagged ``user:<id>``."""
    return next((t[5:] for t in tags or () if t.startswith("user:") and len(t) > 5), None)


def metadata(record: dict[str, Any], promoted: tuple[str, ...], derived: dict[str, Any] | None) -> str:
    """The canonical metadata: the record's ``metadata`` (``metadata_`` in v1) at top level, every
    other field but the promoted ones under ``_source``, what the connector derived under ``_letta``."""
    meta_key = "metadata" if "metadata" in record else "metadata_"
    rest = {k: v for k, v in without_vectors(record).items() if k not in promoted and k != meta_key}
    if not derived:
        return records.metadata(record.get(meta_key), rest)
    out = json.loads(records.metadata(record.get(meta_key), rest))
    out["_letta"] = derived
    return records.dumps(out)


def record_list(container: dict[str, Any], key: str, where: str) -> list[Any]:
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Rejected(
            RejectReason.WRONG_TYPE, f"field {where}{key} is a JSON {json_type(value)}, expected an array"
        )
    return value


def skip(reason: RejectReason, detail: str) -> Rejected:
    return Rejected(reason, detail)


def placed(pos: int, raw: str | None, exc: Rejected, where: str) -> Row:
    """The reject row, its detail naming the place in the document."""
    detail = exc.detail if exc.detail.startswith(where) else f"{where}: {exc.detail}"
    return records.reject(pos, raw, exc.reason, detail)


# --- the agent file ---------------------------------------------------------------------------


class AgentFile:
    """Staged rows for one parsed agent file (v2 ``agents``/``blocks``/… or v1 single agent)."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.value: dict[str, Any] = doc.value
        self.v2 = "agents" in self.value

    def key(self, local: str) -> tuple[str, str]:
        """(source_id, idempotency_key) of a file-local id: both carry the file's SHA-256."""
        return f"{self.doc.ident}:{local}", f"letta:{self.doc.ident}:{local}"

    def rows(self) -> Iterator[Row]:
        if self.v2:
            yield from self._v2()
        else:
            yield from self._v1()
        if self.doc.broken is not None:
            yield records.rejected(0, None, self.doc.broken)

    # v2: {"agents": [...], "blocks": [...], "files": [...], "tools": [...], ...}
    def _v2(self) -> Iterator[Row]:
        top = self.value
        try:
            agents_raw = record_list(top, "agents", "")
        except Rejected as exc:
            yield records.rejected(0, raw_text(top.get("agents")), exc)
            agents_raw = []
        agents = [self._agent(a, f"agents[{i}]") for i, a in enumerate(agents_raw)]
        exported = self._time(top.get("created_at"), "created_at (of the agent file)")
        file_info = {k: v for k, v in top.items() if k not in ("agents", "blocks", "files", "mcp_servers")}
        file_info = {k: v for k, v in file_info.items() if k not in CONFIG_LISTS}
        for agent, record in zip(agents, agents_raw, strict=True):
            if self.doc.finished(record):
                yield self._agent_row(record, agent, exported, {"agent_file": file_info})
            yield from self._messages(record, agent)
        by_block, by_file, by_source = _owners(agents_raw, agents)
        only = agents[0] if len(agents) == 1 else None
        for i, block in self._list(top, "blocks"):
            local = block.get("id") if isinstance(block, dict) else None
            owners = by_block.get(local, []) if isinstance(local, str) else []
            yield self._block(block, f"blocks[{i}]", owners or ([only] if only else []), exported, None)
        for i, file in self._list(top, "files"):
            owner = only
            if isinstance(file, dict):
                owner = by_file.get(str(file.get("id"))) or by_source.get(str(file.get("source_id"))) or only
            yield self._file(file, f"files[{i}]", owner, exported)
        for key, kind in (*CONFIG_LISTS.items(), ("mcp_servers", "MCP server")):
            for i, item in self._list(top, key):
                yield self._config(item, f"{key}[{i}]", kind, keep_raw=key != "mcp_servers")

    # v1: the whole document is one agent with core_memory, messages and tools.
    def _v1(self) -> Iterator[Row]:
        top = self.value
        agent = self._agent(top, "agent")
        created = self._time(top.get("created_at"), "created_at (of the agent)")
        updated = self._time(top.get("updated_at"), "updated_at (of the agent)")
        if self.doc.finished(top):
            yield self._agent_row(top, agent, created, None)
        yield from self._messages(top, agent)
        for i, block in self._list(top, "core_memory"):
            yield self._block(block, f"core_memory[{i}]", [agent], lambda: updated() or created(), i)
        for i, tool in self._list(top, "tools"):
            yield self._config(tool, f"tools[{i}]", "tool", keep_raw=True)

    def _list(self, container: dict[str, Any], key: str, where: str = "") -> Iterator[tuple[int, Any]]:
        """The finished items of a record list (a wrong type is one reject)."""
        try:
            items = record_list(container, key, where)
        except Rejected as exc:
            yield -1, exc
            return
        for i, item in enumerate(items):
            if not self.doc.finished(item):
                return
            yield i, item

    def _time(self, value: Any, field: str) -> Callable[[], datetime | None]:
        """A fallback time, parsed when a record needs it (a bad one rejects those records)."""
        return lambda: parse_time(value, field)

    def _agent(self, record: Any, where: str) -> Agent:
        if not isinstance(record, dict):
            return Agent(where, None, None, None, Speaker(), None)
        local = record.get("id") if isinstance(record.get("id"), str) else None
        name = record.get("name") if isinstance(record.get("name"), str) else None
        kind = record.get("agent_type")
        messages = record.get("messages")
        messages = messages if isinstance(messages, list) else []
        speaks_by_tool = kind in SEND_MESSAGE_AGENTS or any(
            calls_send_message(m) for m in messages if isinstance(m, dict)
        )
        in_context: set[Any] | None = None
        ids = record.get("in_context_message_ids")
        indices = record.get("in_context_message_indices")
        if isinstance(ids, list):
            in_context = {i for i in ids if isinstance(i, str)}
        elif isinstance(indices, list):
            in_context = {i for i in indices if isinstance(i, int)}
        try:
            user_id = user_from_tags(_tag_texts(record.get("tags")))
        except Rejected:
            user_id = None  # the agent record itself is rejected for its tags
        system = record.get("system") if isinstance(record.get("system"), str) else None
        speaker = Speaker(speaks_by_tool, send_message_calls(messages), system)
        orphaned_by = None
        if local is None and name is None and not self.doc.finished(record):
            orphaned_by = self.doc.broken
        return Agent(where, local, name, user_id, speaker, in_context, orphaned_by)

    def _orphaned(self, owner: Agent | None, where: str) -> None:
        if owner is not None and owner.orphaned_by is not None:
            raise Rejected(
                owner.orphaned_by.reason,
                f"{where}: the document breaks off before its agent's name and id, so nothing says "
                "whose record this is",
            )

    def _scope(self, agent: Agent | None) -> Row:
        if agent is None:
            return {}
        return {
            "agent_id": agent.local_id,
            "user_id": agent.user_id,
            "scope_agent": agent.name or agent.local_id,
            "scope_agent_name": agent.name,
            "scope_agent_id": agent.local_id,
            "scope_user_id": agent.user_id,
        }

    def _agent_row(
        self, record: dict[str, Any], agent: Agent, fallback: Callable[[], datetime | None], derived: Any
    ) -> Row:
        own = {k: v for k, v in record.items() if k not in _AGENT_RECORD_LISTS}  # its records are rows
        raw = raw_text(own)
        try:
            records.check_depth(own, agent.where)
            local = ident(record, "id", required=self.v2) or "agent"
            system = text(record, "system")
            if not system or not system.strip():
                raise skip(
                    RejectReason.EMPTY_NODE, f"{agent.where} ({agent.name}): the agent has no system prompt"
                )
            created = parse_time(record.get("created_at"), "created_at")
            updated = parse_time(record.get("updated_at"), "updated_at")
            tags = _tag_texts(record.get("tags"))
            clean = _redacted(own)
            source_id, key = self.key(local)
            return {
                "raw": raw,
                "idempotency_key": key,
                "source_id": source_id,
                "type": "document",
                "content": system,
                "source": SOURCE,
                "author": agent.name,
                "status": "active",
                "tags": tags,
                "metadata": metadata(
                    clean, ("id", "name", "system", "created_at", "updated_at", "tags"), derived
                ),
                "observed_at": _observed(created, fallback, agent.where),
                "created_at": created,
                "updated_at": updated,
                **self._scope(agent),
            }
        except Rejected as exc:
            return placed(0, raw, exc, agent.where)

    def _messages(self, record: Any, agent: Agent) -> Iterator[Row]:
        if not isinstance(record, dict):
            if self.doc.finished(record):
                yield records.reject(
                    0,
                    raw_text(record),
                    RejectReason.NOT_AN_OBJECT,
                    f"{agent.where} is a JSON {json_type(record)}, not an object",
                )
            return
        for i, message in self._list(record, "messages", f"{agent.where}."):
            if isinstance(message, Rejected):
                yield records.rejected(0, raw_text(record.get("messages")), message)
            else:
                yield self._message(message, i, agent)

    def _message(self, msg: Any, index: int, agent: Agent) -> Row:
        where = f"{agent.where}.messages[{index}]"
        raw = raw_text(msg)
        try:
            msg = records.record_object(msg, where)
            local = ident(msg, "id", required=self.v2)
            if local is None:
                local = f"messages[{index}]"  # legacy files have no message ids
            else:
                where = f"{where} ({local})"
            self._orphaned(agent, where)
            role = text(msg, "role", required=True)
            assert role is not None
            content, canonical, verbatim = message_text(msg, role, index, agent.speaker, where)
            created = parse_time(msg.get("created_at"), "created_at")
            source_id, key = self.key(local)
            derived = None
            if agent.in_context is not None:
                derived = {"in_context": (local if self.v2 else index) in agent.in_context}
            author = msg.get("name") if isinstance(msg.get("name"), str) else None
            if canonical == "assistant":
                author = author or agent.name
            elif canonical == "user":
                author = author or (msg.get("sender_id") if isinstance(msg.get("sender_id"), str) else None)
            promoted = ("id", "role", "created_at", "updated_at") + (("content",) if verbatim else ())
            return {
                "raw": raw,
                "idempotency_key": key,
                "source_id": source_id,
                "type": "message",
                "content": content,
                "role": canonical,
                "source": SOURCE,
                "author": author,
                "status": "active",
                "metadata": metadata(msg, promoted, derived),
                "observed_at": created,
                "created_at": created,
                "updated_at": parse_time(msg.get("updated_at"), "updated_at"),
                **self._scope(agent),
            }
        except Rejected as exc:
            return placed(0, raw, exc, where)

    def _block(
        self,
        block: Any,
        where: str,
        owners: list[Agent],
        fallback: Callable[[], datetime | None],
        index: int | None,
    ) -> Row:
        if isinstance(block, Rejected):
            return records.rejected(0, None, block)
        raw = raw_text(block)
        try:
            block = records.record_object(block, where)
            local = ident(block, "id", required=self.v2) or f"core_memory[{index}]"
            label = text(block, "label")
            where = f"{where} ({local}, {label})"
            self._orphaned(owners[0] if owners else None, where)
            value = text(block, "value", required=True)
            assert value is not None
            if not value.strip():
                raise skip(RejectReason.EMPTY_NODE, f"{where}: the memory block is empty")
            created = parse_time(block.get("created_at"), "created_at")
            updated = parse_time(block.get("updated_at"), "updated_at")
            tags = str_list(block.get("tags"), "tags")
            source_id, key = self.key(local)
            derived = {"agents": [a.name or a.local_id for a in owners]} if len(owners) > 1 else None
            return {
                "raw": raw,
                "idempotency_key": key,
                "source_id": source_id,
                "type": "document",
                "content": value,
                "source": SOURCE,
                "status": "active",
                "categories": [label] if label else None,
                "tags": tags,
                "metadata": metadata(block, ("id", "value", "created_at", "updated_at", "tags"), derived),
                "observed_at": _observed(updated or created, fallback, where),
                "created_at": created,
                "updated_at": updated,
                **self._scope(owners[0] if owners else None),
            }
        except Rejected as exc:
            return placed(0, raw, exc, where)

    def _file(
        self, file: Any, where: str, owner: Agent | None, fallback: Callable[[], datetime | None]
    ) -> Row:
        if isinstance(file, Rejected):
            return records.rejected(0, None, file)
        raw = raw_text(file)
        try:
            file = records.record_object(file, where)
            local = ident(file, "id", required=True)
            assert local is not None
            name = text(file, "file_name")
            where = f"{where} ({local}, {name})"
            content = text(file, "content")
            if not content or not content.strip():
                status = file.get("processing_status")
                raise skip(
                    RejectReason.EMPTY_NODE,
                    f"{where}: the file has no content text (processing_status {status})",
                )
            created = parse_time(file.get("created_at"), "created_at")
            updated = parse_time(file.get("updated_at"), "updated_at")
            source_id, key = self.key(local)
            return {
                "raw": raw,
                "idempotency_key": key,
                "source_id": source_id,
                "type": "document",
                "content": content,
                "source": SOURCE,
                "status": "active",
                "metadata": metadata(file, ("id", "content", "created_at", "updated_at"), None),
                "observed_at": _observed(updated or created, fallback, where),
                "created_at": created,
                "updated_at": updated,
                **self._scope(owner),
            }
        except Rejected as exc:
            return placed(0, raw, exc, where)

    def _config(self, item: Any, where: str, kind: str, *, keep_raw: bool) -> Row:
        if isinstance(item, Rejected):
            return records.rejected(0, None, item)
        name = None
        if isinstance(item, dict):
            name = next(
                (item[k] for k in ("name", "server_name", "id") if isinstance(item.get(k), str)), None
            )
        label = f"{where} ({kind} {name})" if name else where
        why = "agent configuration, not memory"
        if not keep_raw:
            why += "; its settings may hold credentials and are not kept"
        return records.reject(
            0, raw_text(item) if keep_raw else None, RejectReason.HIDDEN_NODE, f"{label}: {why}"
        )


def _observed(own: datetime | None, fallback: Callable[[], datetime | None], where: str) -> datetime:
    """A record's own time, else the file's (blocks of the current generation have none)."""
    observed = own or fallback()
    if observed is None:
        raise Rejected(
            RejectReason.MISSING_FIELD,
            f"{where}: no created_at/updated_at of its own and none on the agent file to fall back on",
        )
    return observed


def _tag_texts(tags: Any) -> list[str] | None:
    """Agent tags: strings (v2) or ``{"tag": ...}`` objects (v1)."""
    if isinstance(tags, list):
        tags = [t.get("tag") if isinstance(t, dict) else t for t in tags]
    return str_list(tags, "tags")


def _redacted(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    for key in _SECRET_FIELDS:
        value = out.get(key)
        if isinstance(value, list):
            out[key] = [
                {**v, "value": _REDACTED} if isinstance(v, dict) and "value" in v else v for v in value
            ]
        elif isinstance(value, dict):
            out[key] = {k: _REDACTED for k in value}
    return out


def _owners(
    records_: list[Any], agents: list[Agent]
) -> tuple[dict[str, list[Agent]], dict[str, Agent], dict[str, Agent]]:
    """Which agents use each block (``block_ids``), file (``files_agents``) and source (``source_ids``)."""
    blocks: dict[str, list[Agent]] = {}
    files: dict[str, Agent] = {}
    sources: dict[str, Agent] = {}
    for record, agent in zip(records_, agents, strict=True):
        if not isinstance(record, dict):
            continue
        for block_id in record.get("block_ids") or ():
            if isinstance(block_id, str):
                blocks.setdefault(block_id, []).append(agent)
        for link in record.get("files_agents") or ():
            if isinstance(link, dict) and isinstance(link.get("file_id"), str):
                files.setdefault(link["file_id"], agent)
        for source_id in record.get("source_ids") or ():
            if isinstance(source_id, str):
                sources.setdefault(source_id, agent)
    return blocks, files, sources
