"""The service lifecycle: its statuses, the closed vocabularies of an operation, and one table of
the named transitions (which event moves a service from which status to which).

`decide` stamps the status a transition gives on the event it emits; `evolve` takes the status an
event carries and turns to this table only for events recorded before they carried one; the
services projector copies the status and falls back to what an event says on its own (`implied`).
Pure: no I/O; imports nothing of the project (Avro keeps these vocabularies as plain strings).
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class Status(StrEnum):
    REQUESTED = "Requested"
    PROVISIONING = "Provisioning"
    READY = "Ready"
    SCALING = "Scaling"
    DELETING = "Deleting"
    DELETED = "Deleted"
    FAILED = "Failed"


class Action(StrEnum):
    """What an operation makes true in the PoP."""

    APPLY = "apply"
    DELETE = "delete"


class Step(StrEnum):
    """The steps of a service operation after acceptance, in order."""

    RENDER = "render"
    COMMIT = "commit"
    POP_REPORT = "pop-report"


class Phase(StrEnum):
    """What a PoP reports about a service."""

    READY = "Ready"
    FAILED = "Failed"
    DELETED = "Deleted"


class Compensation(StrEnum):
    """Why the running operation's commit is being reverted."""

    FAILED = "failed"
    CANCELLED = "cancelled"


class LifecycleError(ValueError):
    """An event that the lifecycle table does not allow from the service's status."""


class Facts(NamedTuple):
    """What a transition may depend on besides the status (all False: a service nothing waits on)."""

    ran: bool = False  # a PoP reported it Ready at least once
    deletion_waits: bool = False  # a deletion waits in its queue (other than the event's own operation)
    deleting: bool = False  # the running operation is a deletion
    rendered: bool = False  # the running operation's manifests are rendered
    reverting_failure: bool = False  # the running operation failed and its commit is being reverted


NOTHING_KNOWN = Facts()


class When(StrEnum):
    """The guard of a transition: the fact that must hold (first matching row wins)."""

    ALWAYS = "always"
    RAN = "ran"
    NEVER_RAN = "never ran"
    DELETION_WAITS = "deletion waits"
    DELETING = "deleting"
    RENDERED = "rendered"
    REVERTING_FAILURE = "reverting a failure"

    def holds(self, f: Facts) -> bool:
        match self:
            case When.ALWAYS:
                return True
            case When.RAN:
                return f.ran
            case When.NEVER_RAN:
                return not f.ran
            case When.DELETION_WAITS:
                return f.deletion_waits
            case When.DELETING:
                return f.deleting
            case When.RENDERED:
                return f.rendered
            case _:
                return f.reverting_failure


class Transition(NamedTuple):
    name: str
    event: str  # the event record's name, with the variant that matters in brackets
    sources: frozenset[Status | None]  # None: no such service yet
    when: When
    target: Status | None  # None: the status stays as it is


S = Status
NEW: frozenset[Status | None] = frozenset({None})
LIVE: frozenset[Status | None] = frozenset(Status) - {S.DELETED}
CHANGEABLE = LIVE - {S.DELETING}
KEEP = None
A, RAN, NEVER, WAITS = When.ALWAYS, When.RAN, When.NEVER_RAN, When.DELETION_WAITS

# Event kinds whose record alone does not name the transition.
STARTED_APPLY, STARTED_DELETE = "OperationStarted(apply)", "OperationStarted(delete)"
FAILED_BEFORE_COMMIT, FAILED_AFTER_COMMIT = "ServiceFailed(before commit)", "ServiceFailed(after commit)"
CANCELLED_RUNNING = "OperationCancelled(awaiting its PoP)"
CANCELLED_QUEUED = "OperationCancelled(queued)"
CANCELLED_BEHIND_CREATION = "OperationCancelled(behind a cancelled creation)"
REVERTED = "ServiceClaimReverted"
REVERTED_CREATION = "ServiceClaimReverted(cancelled creation)"

# A deletion waiting in the queue outranks whatever a service comes to rest or starts in: it is on
# its way out. Rows are tried in order; the first whose source and guard fit is the transition.
TRANSITIONS: tuple[Transition, ...] = (
    #           name                        event                       from         when       to
    Transition("request-creation",         "ServiceRequested",          NEW,         A,         S.REQUESTED),
    Transition("request-scale",            "ServiceScaleRequested",     CHANGEABLE,  A,         S.SCALING),
    Transition("request-protection",       "DeletionProtectionSet",     CHANGEABLE,  A,         S.SCALING),
    Transition("request-deletion",         "ServiceDeletionRequested",  CHANGEABLE,  A,         S.DELETING),
    Transition("start-deletion",           STARTED_DELETE,              LIVE,        A,         S.DELETING),
    Transition("start-behind-deletion",    STARTED_APPLY,               LIVE,        WAITS,     S.DELETING),
    Transition("start-change",             STARTED_APPLY,        frozenset({S.READY, S.FAILED}), RAN, S.SCALING),
    Transition("retry-creation",           STARTED_APPLY,        frozenset({S.READY, S.FAILED}), NEVER, S.REQUESTED),
    Transition("start",                    STARTED_APPLY,               LIVE,        A,         KEEP),
    Transition("render-creation",          "ServiceClaimRendered", frozenset({S.REQUESTED}), A, S.PROVISIONING),
    Transition("render",                   "ServiceClaimRendered",      LIVE,        A,         KEEP),
    Transition("ready-behind-deletion",    "ServiceReady",              LIVE,        WAITS,     S.DELETING),
    Transition("ready",                    "ServiceReady",              LIVE,        A,         S.READY),
    Transition("fail-and-revert",          FAILED_AFTER_COMMIT,         LIVE,        A,         S.FAILED),
    Transition("fail-behind-deletion",     FAILED_BEFORE_COMMIT,        LIVE,        WAITS,     S.DELETING),
    Transition("fail-back-to-ready",       FAILED_BEFORE_COMMIT,        LIVE,        RAN,       S.READY),
    Transition("fail",                     FAILED_BEFORE_COMMIT,        LIVE,        A,         S.FAILED),
    Transition("cancel-and-revert",        CANCELLED_RUNNING,           LIVE,        A,         KEEP),
    Transition("drop-behind-deletion",     CANCELLED_QUEUED,            LIVE,        WAITS,     KEEP),
    Transition("drop-while-failing",       CANCELLED_QUEUED,            LIVE, When.REVERTING_FAILURE, S.FAILED),
    Transition("drop-while-deleting",      CANCELLED_QUEUED,            LIVE,        When.DELETING, S.DELETING),
    Transition("drop-while-changing",      CANCELLED_QUEUED,            LIVE,        RAN,       S.SCALING),
    Transition("drop-while-provisioning",  CANCELLED_QUEUED,            LIVE,        When.RENDERED, S.PROVISIONING),
    Transition("drop-while-requested",     CANCELLED_QUEUED,            LIVE,        A,         S.REQUESTED),
    Transition("drop-behind-creation",     CANCELLED_BEHIND_CREATION,   LIVE,        A,         KEEP),
    Transition("undo-creation",            REVERTED_CREATION,           LIVE,        A,         S.DELETED),
    Transition("revert-behind-deletion",   REVERTED,                    LIVE,        WAITS,     S.DELETING),
    Transition("revert-to-ready",          REVERTED,                    LIVE,        RAN,       S.READY),
    Transition("revert-failed-creation",   REVERTED,                    LIVE,        A,         S.FAILED),
    Transition("remove",                   "ServiceDeleted",            LIVE,        A,         S.DELETED),
)

_BY_EVENT: dict[str, tuple[Transition, ...]] = {}
for _t in TRANSITIONS:
    _BY_EVENT[_t.event] = (*_BY_EVENT.get(_t.event, ()), _t)
EVENTS = tuple(_BY_EVENT)  # every event kind that may change a service's status


def transition(event: str, status: Status | None, facts: Facts = NOTHING_KNOWN) -> Transition:
    """The named transition `event` makes from `status`; LifecycleError when the table has none."""
    rows = _BY_EVENT.get(event)
    if rows is None:
        raise LifecycleError(f"{event} is not a service lifecycle event; known: {', '.join(EVENTS)}")
    for row in rows:
        if status in row.sources and row.when.holds(facts):
            return row
    raise LifecycleError(f"{event} cannot happen to a service that is {status or 'not there yet'}")


def after(event: str, status: Status | None, facts: Facts = NOTHING_KNOWN) -> Status:
    """The status a service has after `event`."""
    target = transition(event, status, facts).target
    if target is None:
        assert status is not None  # a service that is not there yet has no status to keep
        return status
    return target


def implied(event: str) -> Status | None:
    """What `event` says about the status on its own, knowing nothing of the service: the target
    shared by its unguarded rows (None: it depends on what came before). For events recorded before
    they carried their status."""
    targets = {t.target for t in _BY_EVENT.get(event, ()) if t.when is When.ALWAYS}
    return targets.pop() if len(targets) == 1 else None


def started(action: str) -> str:
    """The event kind of an operation start."""
    return STARTED_DELETE if action == Action.DELETE else STARTED_APPLY
