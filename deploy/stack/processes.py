"""Detached child processes tracked by pid files.

A pid file records the pid and the kernel's start time of that process, so a recycled pid is
never mistaken for ours and ``down`` stops exactly what ``up`` started.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from runtime import files


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) counted after the ")" that closes the command name.
    return stat.rsplit(")", 1)[1].split()[19]


class PidFile:
    def __init__(self, path: Path):
        self.path = path

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        files.replace_text(self.path, f"{pid} {_start_time(pid)}\n")

    def pid(self) -> int | None:
        """The recorded pid if that very process is still running, else None."""
        try:
            pid_s, started = self.path.read_text().split()
        except (OSError, ValueError):
            return None
        pid = int(pid_s)
        state = _proc_state(pid)
        if state is None or state == "Z" or _start_time(pid) != started:
            return None
        return pid

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def spawn(argv: list[str], log: Path, pidfile: PidFile, env: dict[str, str] | None = None,
          cwd: Path | None = None, user: str | None = None) -> int:
    """Start ``argv`` in its own session (so it outlives the launcher and can be signalled as
    a group), appending its output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
            user=user, group=user,
        )
    pidfile.write(proc.pid)
    return proc.pid


def stop(pidfile: PidFile, sig: int = signal.SIGTERM, timeout: float = 45.0) -> bool:
    """Signal the process group, wait for it to exit, escalate to SIGKILL after ``timeout``.
    Returns True when something was stopped."""
    pid = pidfile.pid()
    if pid is None:
        pidfile.clear()
        return False
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pidfile.pid() is None:
            break
        _reap(pid)
        time.sleep(0.1)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while pidfile.pid() is not None:
            _reap(pid)
            time.sleep(0.1)
    pidfile.clear()
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
