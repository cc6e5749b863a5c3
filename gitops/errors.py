"""Typed errors of the ``gitops`` package: one base, transient vs permanent.

Role: every failure raised by ``gitops`` (layout, committer) is a :class:`GitOpsError`. Callers
(saga processors) decide by ``err.transient`` alone: a transient error is retried later with
backoff; a permanent one will fail the same way again and becomes a rejection/failure event with
``err.reason`` (a stable CamelCase token) and ``str(err)`` (a message a person can act on).

Imports: standard library only.
"""

from __future__ import annotations

from typing import ClassVar


class GitOpsError(Exception):
    """Base of every gitops error. ``reason`` is stable and machine-readable; the message is for
    people; ``detail`` carries raw tool output (git's stderr) for logs, never for decisions."""

    transient: ClassVar[bool] = False
    reason: str = "GitOpsError"

    def __init__(self, message: str, *, reason: str | None = None, detail: str = "") -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.detail = detail


class TransientGitOpsError(GitOpsError):
    """May succeed if tried again later (network trouble, remote busy, lock contention)."""

    transient = True
    reason = "GitOpsUnavailable"


class PermanentGitOpsError(GitOpsError):
    """Will fail the same way on every retry until a person changes something."""

    transient = False
    reason = "GitOpsRejected"


class InvalidPath(PermanentGitOpsError, ValueError):
    """A repository path or a name used to build one is unsafe or malformed."""

    reason = "InvalidPath"


class InvalidChange(PermanentGitOpsError, ValueError):
    """A change request cannot be applied as given (bad message, ids, or file/directory clash)."""

    reason = "InvalidChange"


class RemoteRejected(PermanentGitOpsError):
    """The remote refused the push for a reason other than a race (hook, protection, auth)."""

    reason = "RemoteRejected"


class WorkdirMismatch(PermanentGitOpsError):
    """The committer's working directory exists but is not a clone of the configured remote."""

    reason = "WorkdirMismatch"


class PushConflict(TransientGitOpsError):
    """Other committers kept moving the remote branch; gave up after ``attempts`` tries."""

    reason = "PushConflict"

    def __init__(self, message: str, *, attempts: int, detail: str = "") -> None:
        super().__init__(message, detail=detail)
        self.attempts = attempts
