"""Clean shutdown: SIGTERM and SIGINT set an event the process's main loop watches."""
from __future__ import annotations

import signal
import threading


def stop_event() -> threading.Event:
    """An event set by SIGTERM/SIGINT; the main loop finishes its batch in hand and exits."""
    event = threading.Event()

    def handler(signum, frame):
        event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return event
