"""Running the engines' tools and the one family of errors the engine modules raise."""
from __future__ import annotations

import sys

import psycopg
import pytest

from operators.backup.tools import EngineError, ToolFailed, engine_errors, poll, run


def test_a_failing_tool_is_told_in_its_own_words_and_secrets_stay_in_the_environment():
    script = "import os, sys; print('out'); sys.stderr.write('bad: ' + os.environ['TOOL_SECRET'][:2] + '\\n'); sys.exit(3)"
    with pytest.raises(ToolFailed, match=r"dumping: python\S* exited with 3:\nbad: s3"):
        run([sys.executable, "-c", script], what="dumping", env={"TOOL_SECRET": "s3cret"})
    assert run([sys.executable, "-c", "print('fine')"], what="x") == "fine\n"
    with pytest.raises(ToolFailed, match="is not installed"):
        run(["/nonexistent/pg_dump"], what="dumping")
    with pytest.raises(ToolFailed, match="did not finish within 1s"):
        run([sys.executable, "-c", "import time; time.sleep(5)"], what="waiting", timeout=1)


def test_driver_errors_become_engine_errors_and_others_pass_through():
    @engine_errors
    def switch_wal(exc):
        raise exc

    with pytest.raises(EngineError, match="switch wal: the server refused: permission denied") as caught:
        switch_wal(psycopg.errors.InsufficientPrivilege("permission denied for function pg_switch_wal\nmore"))
    assert isinstance(caught.value.__cause__, psycopg.Error)
    with pytest.raises(KeyError):
        switch_wal(KeyError("mine"))


def test_poll_returns_the_first_value_and_times_out_with_what_it_waited_for():
    values = iter([None, None, 7])
    assert poll(lambda: next(values), timeout=5, interval=0) == 7
    with pytest.raises(EngineError, match="waiting for the archive"):
        poll(lambda: None, timeout=0, interval=0, what="the archive")
