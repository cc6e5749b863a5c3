"""The platform's processes as the tests handle them: a supervised component's child pid, killed
(and restarted by its supervisor) or paused for the length of a block."""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import wait_for


def child_pid(stack, name: str) -> int | None:
    """The pid of component `name`'s process, as its supervisor recorded it (None while it records
    none: between a child's death and its successor's start)."""
    try:
        return int(Path(stack.home, "run", f"{name}.child.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def kill(stack, name: str, timeout: float = 60) -> None:
    """SIGKILL component `name` and wait until its supervisor has started a new one."""
    pid = wait_for(lambda: child_pid(stack, name), what=f"{name}'s pid")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: child_pid(stack, name) not in (None, pid), timeout=timeout, what=f"{name} to be restarted")


@contextmanager
def paused(stack, name: str) -> Iterator[None]:
    """Component `name` stopped (SIGSTOP) for the block and continued after it, whatever happens."""
    pid = wait_for(lambda: child_pid(stack, name), what=f"{name}'s pid")
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
