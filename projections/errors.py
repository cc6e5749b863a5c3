"""Typed errors of `projections`: one base, `ProjectionError`, split into transient and permanent.

Imports nothing of the project.
"""

from __future__ import annotations


class ProjectionError(Exception):
    """Base of every error raised by `projections`."""


class TransientError(ProjectionError):
    """The database, the broker or the registry did not answer: retry the same batch later."""


class ConfigurationError(ProjectionError):
    """Settings that cannot work (a missing variable, an unknown projection name): fix and restart."""


class TopicNotFound(ConfigurationError):
    """The events topic does not exist on the broker."""


class NotFound(ProjectionError):
    """A read-model row that does not exist (an unknown service or operation id)."""


class InvalidCursor(ProjectionError):
    """A pagination cursor this code did not issue, or one that was altered."""
