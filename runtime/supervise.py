"""A minimal process supervisor: keeps one child running, restarts it with backoff when it dies,
and on SIGTERM/SIGINT passes the signal on and exits once the child has.

Usage: ``python -m runtime.supervise --name NAME [--child-pidfile PATH] -- CMD ARGS...``
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from runtime import files, logs, signals

# A child that keeps dying waits longer and longer, up to this (DBAAS_SUPERVISE_MAX_BACKOFF seconds).
MAX_BACKOFF = float(os.environ.get("DBAAS_SUPERVISE_MAX_BACKOFF", "30"))
STABLE_AFTER = 60.0  # a child that ran this long restarts without waiting


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="supervise")
    parser.add_argument("--name", required=True)
    parser.add_argument("--child-pidfile")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    log = logs.configure(f"supervisor:{args.name}")
    stop = signals.stop_event()
    backoff = 1.0
    while not stop.is_set():
        started = time.monotonic()
        child = subprocess.Popen(cmd)
        if args.child_pidfile:
            files.replace_text(Path(args.child_pidfile), f"{child.pid}\n")
        log.info("child started", pid=child.pid)
        while child.poll() is None and not stop.is_set():
            stop.wait(0.2)
        if stop.is_set():
            child.send_signal(signal.SIGTERM)
            try:
                code = child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                code = child.wait()
            log.info("child stopped", code=code)
            return 0
        code = child.returncode
        ran = time.monotonic() - started
        backoff = 1.0 if ran > STABLE_AFTER else min(backoff * 2, MAX_BACKOFF)
        log.warning("child exited; restarting", code=code, ran_seconds=round(ran, 1), restart_in=backoff)
        stop.wait(backoff if ran <= STABLE_AFTER else 0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
