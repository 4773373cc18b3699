"""memport's error hierarchy: one small tree, every message says what, where and what to do.

Record-level problems never raise: they become rejects. These errors are for problems that make
a whole dump or a whole request unusable.
"""

from __future__ import annotations


class MemportError(Exception):
    """Base class of every error memport raises on purpose."""


class ConfigError(MemportError):
    """A setting is wrong (bad scope template, unknown system, bad URL) before any data is read."""


class DumpFormatError(MemportError):
    """A dump is not in the format its connector expects; nothing from it was stored."""

    def __init__(self, uri: str, expected: str, found: str) -> None:
        self.uri, self.expected, self.found = uri, expected, found
        super().__init__(
            f"{uri}: not a {expected}; found {found}. Move the file to the landing folder of the "
            "system that produced it, or fix the export."
        )


class StoreError(MemportError):
    """The episode store is missing, inconsistent, or could not be written."""


class ExportRequestError(ConfigError):
    """An export request is invalid; raised before any work, naming the offending field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"export request: field {field!r}: {message}")


class ExportError(MemportError):
    """An export could not be found, is not usable yet, or is no longer usable."""

    def __init__(self, export_id: str, message: str) -> None:
        self.export_id = export_id
        super().__init__(message)


class ExportNotFoundError(ExportError):
    """No export with this id (HTTP-like 404)."""


class ExportNotReadyError(ExportError):
    """The export is still pending or processing (HTTP-like 409)."""


class ExportFailedError(ExportError):
    """The export failed; its manifest keeps the error."""


class ExportExpiredError(ExportError):
    """The export's time-to-live passed and its files were deleted (HTTP-like 410)."""


class BackupError(StoreError):
    """A snapshot could not be taken, or a backup is missing, corrupt, or cannot be restored."""
