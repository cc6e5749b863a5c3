"""The recovery window of a service: which instants and which span of time it can be restored to.

One rule for `decide` (a restore outside the window is rejected with it) and for the read side
(`GET /services/{id}/recovery-window`). Pure: no I/O, no clock (`now` comes in).
Imports the standard library only.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Restorable:
    """A completed backup as the window needs it."""

    backup_id: str
    taken_at: datetime
    pitr_from: datetime | None  # None: restorable as of `taken_at` only


@dataclass(frozen=True)
class Window:
    instants: tuple[Restorable, ...]  # completed backups, oldest first
    earliest: datetime | None  # point-in-time span; None: no point-in-time recovery
    latest: datetime | None

    @property
    def pitr(self) -> bool:
        return self.earliest is not None and self.latest is not None and self.earliest <= self.latest

    def covers(self, t: datetime) -> bool:
        return self.pitr and self.earliest <= t <= self.latest  # type: ignore[operator]

    def describe(self) -> str:
        if self.pitr:
            return f"from {self.earliest.isoformat()} to {self.latest.isoformat()}"  # type: ignore[union-attr]
        return "empty (no backup with point-in-time recovery)"


def window(backups: Iterable[Restorable], *, pitr_on: bool, pitr_off_at: datetime | None,
           deleted_at: datetime | None, now: datetime) -> Window:
    """The window of a service given its completed backups. With the log archived, a service is
    restorable from its oldest backup's `pitr_from` up to now — while its policy keeps PITR on and
    the service exists; up to the moment PITR was turned off, or the service deleted, after that."""
    kept = tuple(sorted(backups, key=lambda b: b.taken_at))
    starts = [b.pitr_from for b in kept if b.pitr_from is not None]
    if not starts:
        return Window(kept, None, None)
    ends = [now]
    if not pitr_on and pitr_off_at is not None:
        ends.append(pitr_off_at)
    if deleted_at is not None:
        ends.append(deleted_at)
    return Window(kept, min(starts), min(ends))
