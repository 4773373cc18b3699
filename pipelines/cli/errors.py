"""What the command line prints when something fails: the cause a person can act on, not the
wrapper Dagster puts around it, and never a raw traceback for a mistake in the command itself."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Any

from connectors.errors import MemportError

#: Lines of an error message kept in the one-line summary (a DumpFormatError may say more below).
_MAX_LINES = 3


def describe_error(error: Any) -> str:
    """``Class: message`` of the innermost cause of a Dagster ``SerializableErrorInfo``.

    A failed op is reported by Dagster as ``DagsterExecutionStepExecutionError: Error occurred
    while executing op …``; the real error (a ``DumpFormatError``, a ``MemoryError``, a
    ``RecursionError``) is its ``cause``.
    """
    while getattr(error, "cause", None) is not None:
        error = error.cause
    cls_name = str(getattr(error, "cls_name", "") or "Error")
    message = str(getattr(error, "message", "") or "").strip()
    # the message is `traceback.format_exception_only`: "package.module.Class: text"
    head, sep, rest = message.partition(": ")
    if sep and head.rsplit(".", 1)[-1] == cls_name:
        message = rest
    lines = [line for line in message.splitlines() if line.strip()][:_MAX_LINES] or ["(no message)"]
    if cls_name == "Failure":  # dg.Failure: the op already wrote a full description
        return " ".join(lines)
    return f"{cls_name}: " + " ".join(lines)


def first_error(result: Any) -> str:
    """The underlying error of a failed run (not Dagster's "error occurred while executing op")."""
    for event in result.all_events:
        if event.is_failure and event.step_failure_data:
            return describe_error(event.step_failure_data.error)
    return "unknown error (see the run in the Dagster UI)"


def friendly(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """memport's own errors say what was wrong and what to do: print them (exit 2), no traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except MemportError as exc:
            print(f"memport {args.command}: {exc}", file=sys.stderr)
            return 2
        except FileNotFoundError as exc:  # e.g. no catalog yet: its message says to run `make run`
            print(f"memport {args.command}: {exc}", file=sys.stderr)
            return 2

    return run
