"""The one exception hierarchy of the toolkit.

Every error says what failed and how to fix it, and carries the exit code the CLI
returns for it (in the spirit of click's exceptions): the CLI sets no exit code of
its own anywhere else.
"""

from __future__ import annotations


class GraderError(Exception):
    """Base of every error the toolkit raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(GraderError):
    """The command line or an argument was wrong."""

    exit_code = 2


class SpecError(GraderError):
    """An assignment's spec (assignment.toml) or source notebook is invalid."""

    exit_code = 3


class DataError(GraderError):
    """A data set could not be found, downloaded or validated."""

    exit_code = 4


class SubmissionError(GraderError):
    """One submission could not be read. Batch grading records it and goes on."""

    exit_code = 5


class ExecutionError(GraderError):
    """Running a notebook or a sandboxed process failed for a reason outside the student's code."""

    exit_code = 6


class ValidationFailed(GraderError):
    """`grader validate` found problems; the message lists them."""

    exit_code = 7


class GradebookError(GraderError):
    """The gradebook could not be opened or written (a locked or corrupt database file)."""

    exit_code = 8
