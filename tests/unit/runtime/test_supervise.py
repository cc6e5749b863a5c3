"""The supervisor restarts a dying child and records each new pid so that a reader never sees a
missing, empty or half-written pid file; SIGTERM stops it and its child."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[3]


def test_pid_file_is_always_whole_while_the_child_restarts(tmp_path):
    pidfile = tmp_path / "child.pid"
    env = {**os.environ, "DBAAS_SUPERVISE_MAX_BACKOFF": "0.01"}
    sup = subprocess.Popen([sys.executable, "-m", "runtime.supervise", "--name", "t",
                            "--child-pidfile", str(pidfile), "--", sys.executable, "-c", "pass"],
                           cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(pidfile.exists, timeout=30, interval=0.01, what="the supervisor to write the pid file")
        deadline = time.monotonic() + 30
        seen: set[str] = set()
        while len(seen) < 10 and time.monotonic() < deadline:
            text = pidfile.read_text()
            assert text.strip().isdigit(), f"read {text!r} from the pid file"
            seen.add(text)
        assert len(seen) >= 10, f"only {len(seen)} restarts within 30 s"
    finally:
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(30) == 0
