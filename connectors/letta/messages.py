"""Where a Letta message's text really is, for the ``letta`` connector (PEER_FORMATS.md §3.6):
content parts, the ``send_message`` tool-call arguments, JSON-wrapped user turns, tool returns.
The rules are in the module docstring of :mod:`connectors.letta`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from connectors.kit.records import Rejected, json_type
from connectors.schema import RejectReason

#: What only Letta's compiled system prompt holds (the agent's ``system`` with the memory blocks
#: rendered in): MemGPT's layout (``### Memory [last modified: …]`` … ``Core memory shown
#: below``) and the later one (``<base_instructions>``, ``<memory_blocks>``, ``<memory_metadata>``),
#: from ``letta/prompts`` and ``PromptGenerator.compile_memory_metadata_block``.
_COMPILED_MARKERS = (
    "### Memory [last modified:",
    "Core memory shown below",
    "<memory_blocks>",
    "<memory_metadata>",
    "<base_instructions>",
)
_COMPILED = (
    "the compiled system prompt (system text with the memory blocks rendered in; "
    "both are imported on their own)"
)


@dataclass(frozen=True)
class Speaker:
    """What a message's agent tells about its messages: whether it speaks only through
    ``send_message``, the ids of its ``send_message`` calls (their receipts are noise) and its
    ``system`` prompt (every compiled prompt starts with it)."""

    speaks_by_tool: bool = False
    send_calls: frozenset[str] = frozenset()
    system: str | None = None


def send_message_calls(messages: list[Any]) -> frozenset[str]:
    """The ``tool_calls[].id`` of every ``send_message`` call among an agent's messages."""
    found = set()
    for msg in messages:
        calls = msg.get("tool_calls") if isinstance(msg, dict) else None
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            named = isinstance(function, dict) and function.get("name") == "send_message"
            if named and isinstance(call.get("id"), str):
                found.add(call["id"])
    return frozenset(found)


def is_compiled_prompt(text: str, index: int, system: str | None) -> bool:
    """Whether a system message is a compiled system prompt: the first message always is; Letta
    recompiles it whenever memory changes, and each later copy carries its markers or begins
    with the agent's own ``system`` text."""
    if index == 0 or any(marker in text for marker in _COMPILED_MARKERS):
        return True
    own = (system or "").strip()
    body = text.strip()
    return bool(own) and body.startswith(own) and (len(body) == len(own) or body[len(own)].isspace())


def _is_receipt(msg: dict[str, Any], send_calls: frozenset[str]) -> bool:
    """A tool message returning from ``send_message``: by its ``name`` in old files, else by the
    call its ``tool_call_id`` (or a ``tool_returns[].tool_call_id``) answers."""
    if msg.get("name") == "send_message" or msg.get("tool_call_id") in send_calls:
        return True
    returns = msg.get("tool_returns")
    return isinstance(returns, list) and any(
        isinstance(r, dict) and r.get("tool_call_id") in send_calls for r in returns
    )


def message_text(
    msg: dict[str, Any], role: str, index: int, speaker: Speaker, where: str
) -> tuple[str, str, bool]:
    """(content, canonical role, whether content is exactly the message's own text parts).

    Raises :class:`Rejected` for a bad message and for one skipped on purpose (skip reasons).
    """
    texts, only_text = _text_parts(msg.get("content"), where)
    if not texts and msg.get("content") is None and isinstance(msg.get("text"), str):
        texts, only_text = [msg["text"]], False  # MemGPT before Letta 0.6: a plain ``text`` field
    own = "\n\n".join(t for t in texts if t.strip())
    content, canonical = own, role
    if role == "system":
        if is_compiled_prompt(own, index, speaker.system):
            raise Rejected(RejectReason.HIDDEN_NODE, f"{where}: {_COMPILED}")
    elif role == "summary":
        canonical = "system"
    elif role == "approval":
        raise Rejected(RejectReason.HIDDEN_NODE, f"{where}: a tool-approval step, not conversation")
    elif role == "user":
        content, canonical = _unwrap_user(own, where)
    elif role == "assistant":
        spoken = [
            _send_message(args, where) for name, args in _tool_calls(msg, where) if name == "send_message"
        ]
        names = [name for name, _ in _tool_calls(msg, where) if name != "send_message"]
        if spoken:
            content = "\n\n".join(spoken)
        elif own and speaker.speaks_by_tool:
            calls = f" and a call to {', '.join(names)}" if names else ""
            raise Rejected(
                RejectReason.HIDDEN_NODE,
                f"{where}: inner thoughts{calls}, not shown to the user "
                "(this agent speaks through send_message)",
            )
        elif not own and names:
            raise Rejected(RejectReason.HIDDEN_NODE, f"{where}: only a call to {', '.join(names)}, no text")
    elif role in ("tool", "function"):
        canonical = "tool"
        if _is_receipt(msg, speaker.send_calls):
            raise Rejected(
                RejectReason.HIDDEN_NODE, f"{where}: the receipt send_message returns, not conversation"
            )
        if not own:
            content = "\n\n".join(_tool_returns(msg))
    if not content.strip():
        raise Rejected(RejectReason.EMPTY_NODE, f"{where}: the {role} message has no text")
    return content, canonical, only_text and content == own


def _text_parts(parts: Any, where: str) -> tuple[list[str], bool]:
    """The texts of a message's content (a list of parts, or a string in old files), and whether
    the content was nothing but text parts."""
    if parts is None:
        return [], True
    if isinstance(parts, str):
        return [parts], True
    if not isinstance(parts, list):
        raise Rejected(
            RejectReason.WRONG_TYPE, f"{where}: field content is a JSON {json_type(parts)}, expected an array"
        )
    texts: list[str] = []
    only_text = True
    for i, part in enumerate(parts):
        if not isinstance(part, dict):
            raise Rejected(
                RejectReason.WRONG_TYPE,
                f"{where}: content[{i}] is a JSON {json_type(part)}, expected an object",
            )
        if part.get("type", "text") != "text":
            only_text = False
            continue
        value = part.get("text")
        if not isinstance(value, str):
            raise Rejected(
                RejectReason.WRONG_TYPE,
                f"{where}: content[{i}].text is a JSON {json_type(value)}, expected a string",
            )
        texts.append(value)
    return texts, only_text


def _unwrap_user(own: str, where: str) -> tuple[str, str]:
    """A user turn that is a JSON wrapper: ``user_message`` → its message; ``heartbeat``,
    ``login`` and ``system_alert`` (Letta's notes to itself, e.g. that history was evicted) →
    skipped: Letta speaks there, not the user."""
    stripped = own.strip()
    if not stripped.startswith("{"):
        return own, "user"
    try:
        wrapper = json.loads(stripped)
    except ValueError:
        return own, "user"
    kind = wrapper.get("type") if isinstance(wrapper, dict) else None
    if kind in ("heartbeat", "login", "system_alert"):
        raise Rejected(
            RejectReason.HIDDEN_NODE,
            f"{where}: a {kind} event Letta sends as a user turn, not said by the user",
        )
    if kind != "user_message":
        return own, "user"
    message = wrapper.get("message")
    if not isinstance(message, str):
        raise Rejected(
            RejectReason.WRONG_TYPE,
            f"{where}: field message of the {kind} wrapper is a JSON {json_type(message)}, expected a string",
        )
    return message, "user"


def _tool_calls(msg: dict[str, Any], where: str) -> list[tuple[Any, Any]]:
    calls = msg.get("tool_calls")
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise Rejected(
            RejectReason.WRONG_TYPE,
            f"{where}: field tool_calls is a JSON {json_type(calls)}, expected an array",
        )
    found = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            found.append((function.get("name"), function.get("arguments")))
    return found


def calls_send_message(msg: dict[str, Any]) -> bool:
    calls = msg.get("tool_calls")
    return isinstance(calls, list) and any(
        isinstance(c, dict)
        and isinstance(c.get("function"), dict)
        and c["function"].get("name") == "send_message"
        for c in calls
    )


def _send_message(arguments: Any, where: str) -> str:
    """The user-visible reply: ``message`` in the JSON-in-text arguments of ``send_message``."""
    args = arguments
    if isinstance(arguments, str):
        try:
            args = json.loads(arguments)
        except ValueError:
            raise Rejected(
                RejectReason.BAD_VALUE,
                f"{where}: the send_message arguments are not JSON: {arguments[:80]!r}",
            ) from None
    message = args.get("message") if isinstance(args, dict) else None
    if not isinstance(message, str):
        raise Rejected(
            RejectReason.BAD_VALUE,
            f"{where}: the send_message arguments have no message text ({json_type(message)})",
        )
    return message


def _tool_returns(msg: dict[str, Any]) -> list[str]:
    returns = msg.get("tool_returns")
    if not isinstance(returns, list):
        return []
    found = []
    for item in returns:
        value = item.get("func_response") if isinstance(item, dict) else None
        if isinstance(value, str) and value.strip():
            found.append(value)
    return found
