"""User-facing errors.

Every error a user can cause (a bad study file, an unknown name, a missing directory) is raised
as :class:`OptbenchError` with a one-line message that says *what* is wrong and *where*. The CLI
prints that line and exits non-zero without a traceback; anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations


class OptbenchError(Exception):
    """An error caused by the user's input or environment, reported as one line."""

    exit_code = 2


class StudyError(OptbenchError):
    """The study file (TOML) is malformed or names something that does not exist."""


class PlanError(OptbenchError):
    """A study directory is missing, from another study, or its plan file was edited by hand."""


class ResultsError(OptbenchError):
    """A results file cannot be read or written."""


def did_you_mean(name: str, choices: list[str] | tuple[str, ...] | set[str]) -> str:
    """A short hint listing the valid names, closest first, so typos are quick to fix."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=3)
    if close:
        return f"did you mean {', '.join(repr(c) for c in close)}?"
    return f"known: {', '.join(sorted(choices))}"
