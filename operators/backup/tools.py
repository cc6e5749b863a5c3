"""What the engine modules share: their errors, and running the engines' command-line tools
(``pg_dump``, ``mariadb-dump``, …) with passwords kept off the command line and a failure told in
the tool's own words.

Errors: ``EngineError`` is the base (``engine_errors`` turns a database driver's error into
one); ``ToolFailed`` (a tool exited non-zero or timed out), ``ArchiveError`` (the WAL archive does
not cover what was asked), ``RecoveryTargetNotReached`` (the archived WAL ends before the
requested time) and ``ServiceNotFound`` (no such database or keys) are what callers tell apart.
"""
from __future__ import annotations

import functools
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")


class EngineError(Exception):
    """A backup, restore or recovery step failed; the message says which and why."""


class ToolFailed(EngineError):
    """An engine tool exited non-zero (or ran out of time)."""


class ArchiveError(EngineError):
    """The archive (WAL, binlogs) does not hold what is needed, or archiving fails."""


class RecoveryTargetNotReached(EngineError):
    """The archived WAL/binlogs end before the requested recovery time."""


class ServiceNotFound(EngineError):
    """The service's database (or key prefix) does not exist on the server."""


def tail(text: str | bytes, lines: int = 12) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.strip().splitlines()[-lines:])


def run(argv: Sequence[str], *, what: str, env: Mapping[str, str] | None = None, timeout: float = 3600,
        stdin: IO | None = None, stdout: IO | None = None, user: str | None = None,
        cwd: Path | None = None) -> str:
    """Run a tool to completion; its stdout (unless redirected) as text. ``env`` is added to a
    copy of this process's environment (passwords go there, never into ``argv``)."""
    try:
        proc = subprocess.run(list(argv), stdin=stdin if stdin is not None else subprocess.DEVNULL,
                              stdout=stdout if stdout is not None else subprocess.PIPE,
                              stderr=subprocess.PIPE, env={**os.environ, **(env or {})}, timeout=timeout,
                              check=False, user=user, group=user, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise ToolFailed(f"{what}: {Path(argv[0]).name} did not finish within {timeout:.0f}s") from None
    except FileNotFoundError:
        raise ToolFailed(f"{what}: {argv[0]} is not installed") from None
    if proc.returncode != 0:
        raise ToolFailed(f"{what}: {Path(argv[0]).name} exited with {proc.returncode}:\n{tail(proc.stderr)}")
    return proc.stdout.decode(errors="replace") if stdout is None and proc.stdout is not None else ""


def poll(check: Callable[[], T | None], *, timeout: float, interval: float = 0.1,
         what: str = "a condition") -> T:
    """``check()`` until it returns something other than None (exceptions propagate)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise EngineError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


DRIVERS = ("psycopg", "pymysql", "redis")


def engine_errors(method: Callable[..., T]) -> Callable[..., T]:
    """A database driver's error escaping ``method`` becomes an ``EngineError`` naming the step
    and the server's first line, so callers handle one family of errors."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except EngineError:
            raise
        except Exception as exc:
            if type(exc).__module__.split(".")[0] not in DRIVERS:
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EngineError(f"{method.__name__.replace('_', ' ')}: the server refused: {first}") from exc
    return wrapper
