"""User-facing errors of the core library.

Each carries a one-line message that names the file, parameter or input and the cause, because the
CLI prints exactly that line (exit code 2) and nothing else unless `--debug` is given.
"""

from __future__ import annotations


class HilTuneError(Exception):
    """Base of every error a user can cause with bad input; the CLI turns it into exit code 2."""


class ParameterError(HilTuneError, ValueError):
    """A parameter name is unknown, a value is out of range, or an encoded vector is malformed."""


class ProfileError(HilTuneError):
    """A profile file is missing, unreadable or invalid. Lists every problem found, one per line."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


class InputError(HilTuneError):
    """An input image or RAW file is missing, truncated, corrupt or of an unsupported kind."""
