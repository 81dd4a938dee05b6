"""User-facing errors.

Every problem a user can fix (a bad file, a bad option) is raised as a :class:`DetkdError`
whose message names the file (and line, where there is one) and the problem. The command
line prints it as one line on stderr and exits non-zero, never with a traceback.
"""

from __future__ import annotations

import os


class DetkdError(Exception):
    """A problem with the user's input, reported as one line."""


class DataError(DetkdError):
    """Bad or missing data: an image, an annotation file, a results file."""

    def __init__(self, path: str | os.PathLike[str], problem: str, line: int | None = None) -> None:
        self.path = os.fspath(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")
