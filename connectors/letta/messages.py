"""Where a Letta message's text really is, for the ``letta`` connector (PEER_FORMATS.md §3.6):
content parts, the ``send_message`` tool-call arguments, JSON-wrapped user turns, tool returns.
The rules are in the module docstring of :mod:`connectors.letta`.
"""

from __future__ import annotations

import json
from typing import Any

from connectors.kit.records import Rejected, json_type
from connectors.schema import RejectReason


def message_text(
    msg: dict[str, Any], role: str, index: int, speaks_by_tool: bool, where: str
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
        if index == 0:
            raise Rejected(
                RejectReason.HIDDEN_NODE,
                f"{where}: the compiled system prompt (system text with the memory blocks rendered in; "
                "both are imported on their own)",
            )
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
        elif own and speaks_by_tool:
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
        if msg.get("name") == "send_message":
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
    """A user turn that is a JSON wrapper: ``user_message`` → its message, ``system_alert`` → a
    system message, ``heartbeat``/``login`` → skipped (Letta speaks there, not the user)."""
    stripped = own.strip()
    if not stripped.startswith("{"):
        return own, "user"
    try:
        wrapper = json.loads(stripped)
    except ValueError:
        return own, "user"
    kind = wrapper.get("type") if isinstance(wrapper, dict) else None
    if kind in ("heartbeat", "login"):
        raise Rejected(
            RejectReason.HIDDEN_NODE,
            f"{where}: a {kind} event Letta sends as a user turn, not said by the user",
        )
    if kind not in ("user_message", "system_alert"):
        return own, "user"
    message = wrapper.get("message")
    if not isinstance(message, str):
        raise Rejected(
            RejectReason.WRONG_TYPE,
            f"{where}: field message of the {kind} wrapper is a JSON {json_type(message)}, expected a string",
        )
    return message, "user" if kind == "user_message" else "system"


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
