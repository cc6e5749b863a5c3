"""The platform's processes as the tests handle them: a supervised component's child pid, killed
(and restarted by its supervisor) or paused for the length of a block."""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import wait_for


def child_pid(stack, name: str) -> int:
    """The pid of component `name`'s process, as its supervisor recorded it."""
    return int(Path(stack.home, "run", f"{name}.child.pid").read_text().split()[0])


def kill(stack, name: str) -> None:
    """SIGKILL component `name` and wait until its supervisor has started a new one."""
    pid = child_pid(stack, name)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: child_pid(stack, name) != pid, timeout=60, what=f"{name} to be restarted")


@contextmanager
def paused(stack, name: str) -> Iterator[None]:
    """Component `name` stopped (SIGSTOP) for the block and continued after it, whatever happens."""
    pid = child_pid(stack, name)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
