"""The one error type users see.

Anything a user can cause (a missing file, a wrong layout, an unknown name) raises
`ToolchainError` with a message that names the input, says what was expected and how to fix
it. Command-line entry points catch it and print the message without a traceback; anything
else that escapes is a bug in the toolchain.
"""

from __future__ import annotations


class ToolchainError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class InputFileError(ToolchainError):
    """An input file is missing, unreadable or not in the expected layout."""

    def __init__(self, path, problem: str, expected: str | None = None, fix: str | None = None):
        self.path = str(path)
        parts = [f"{self.path}: {problem}"]
        if expected:
            parts.append(f"expected {expected}")
        if fix:
            parts.append(fix)
        super().__init__(". ".join(parts) + ("" if parts[-1].endswith(".") else "."))
