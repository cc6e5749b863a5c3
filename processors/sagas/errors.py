"""How a saga sorts the errors of a step it performs: transient (retry within the step's time),
permanent for this operation (the policy fails the operation with a reason a person can act on),
or a fault of the platform itself (stop, so the supervisor restarts the saga and the operator sees
why, rather than failing every tenant's operations). And the reason a refusal gives a person.

May import: `gitops` (its error types) and the standard library; no Kafka.
"""
from __future__ import annotations

import enum
import subprocess

from gitops.errors import GitOpsError, InvalidChange, InvalidPath, RemoteRejected, WorkdirMismatch
from gitops.helm import HelmNotFoundError, RenderError
from gitops.manifests import ManifestError


class Verdict(enum.Enum):
    RETRY = "retry"  # transient: the same step may succeed later
    FAIL = "fail"  # permanent for this operation: fail it, move on
    HALT = "halt"  # the platform's own fault (or not known to be the operation's): raise


# Faults of the platform, not of one operation: every operation would fail the same way.
PLATFORM_FAULTS = (HelmNotFoundError, WorkdirMismatch, RemoteRejected)
# What a commit refuses because of this operation's change alone.
COMMIT_REFUSALS = (InvalidPath, InvalidChange, ManifestError)
REASON_MAX = 1000  # characters of a tool's message kept in a reason (helm can list many violations)
NEXT_STEP = {
    "render": "nothing was committed; send the request again with values the service chart accepts",
    "commit": "nothing was committed; the GitOps repository must be corrected before the request is sent again",
}
DOING = {"render": "rendered", "commit": "committed to GitOps"}


def classify(exc: Exception, step: str) -> Verdict:
    """What to do about `exc`, raised by `step` (render | commit; a revert is a commit) of an
    operation. A render is a pure function of the event and the chart, so whatever it raises that
    is neither transient nor the platform's fault will be raised again on every retry; a commit is
    the operation's fault only when git refuses its change as such (a path, a file/folder clash)."""
    if isinstance(exc, GitOpsError):
        if exc.transient:
            return Verdict.RETRY
        if isinstance(exc, PLATFORM_FAULTS):
            return Verdict.HALT
    elif isinstance(exc, OSError):
        return Verdict.RETRY
    if step == "render" or isinstance(exc, COMMIT_REFUSALS):
        return Verdict.FAIL
    return Verdict.HALT


def error_name(exc: Exception) -> str:
    """A stable name of the error, for metrics: a gitops error's `reason`, else its type."""
    return exc.reason if isinstance(exc, GitOpsError) else type(exc).__name__


def refusal_reason(exc: Exception, step: str) -> str:
    """Why `step` failed for good and what to do, for a person: the tool's own words (helm's
    message without its debugging hint), then the way forward. The same error gives the same
    reason, so a step failure reported again is the same command."""
    match exc:
        case RenderError(stderr=str() as output) | subprocess.CalledProcessError(stderr=str() as output) \
                if output.strip():
            detail = _one_line(output)
        case subprocess.CalledProcessError(stderr=bytes() as output) if output.strip():
            detail = _one_line(output.decode(errors="replace"))
        case _:
            detail = str(exc) or type(exc).__name__
    if len(detail) > REASON_MAX:
        detail = detail[:REASON_MAX] + "…"
    return f"the service's manifests could not be {DOING[step]}: {detail}; {NEXT_STEP[step]}"


def _one_line(output: str) -> str:
    """A tool's message on one line, without its debugging hint and its `Error: ` prefix."""
    lines = [line.strip() for line in output.splitlines() if line.strip() and "--debug" not in line]
    return " ".join(lines).removeprefix("Error: ")
