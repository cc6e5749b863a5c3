"""Kafka Connect's REST API, as the platform uses it: register a connector idempotently, read its
state, restart what failed, remove it with its offsets.

Role: the one client of a Connect cluster (the local PoP agent drives PoP local's with it; the
CDC benchmark registers its baseline connector with it). The Connect URL and, later, its
credentials come from the caller's settings: everything that authenticates to Connect is built
here, in :func:`client`.

Errors: :class:`ConnectUnavailable` (no answer, 5xx, a rebalance in progress: try again),
:class:`ConnectRefused` (4xx other than 404/409: the configuration is wrong, trying again
changes nothing). May import only the standard library and httpx.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

TIMEOUT = 30.0


class ConnectError(Exception):
    """Base of Kafka Connect's errors."""


class ConnectUnavailable(ConnectError):
    """Connect did not answer, or answered that it cannot now (5xx, 409 during a rebalance)."""


class ConnectRefused(ConnectError):
    """Connect refused the request for good (an invalid configuration, an unknown plugin)."""


@dataclass(frozen=True)
class TaskState:
    task_id: int
    state: str  # RUNNING | FAILED | PAUSED | UNASSIGNED | RESTARTING
    trace: str | None = None


@dataclass(frozen=True)
class ConnectorState:
    name: str
    state: str  # RUNNING | FAILED | PAUSED | STOPPED | UNASSIGNED | RESTARTING
    tasks: tuple[TaskState, ...]
    trace: str | None = None

    @property
    def running(self) -> bool:
        return self.state == "RUNNING" and bool(self.tasks) and all(t.state == "RUNNING" for t in self.tasks)

    @property
    def failed(self) -> tuple[TaskState, ...]:
        return tuple(t for t in self.tasks if t.state == "FAILED")

    @property
    def failure(self) -> str | None:
        """The first line of what failed, for a person."""
        trace = self.trace if self.state == "FAILED" else next((t.trace for t in self.failed if t.trace), None)
        return trace.strip().splitlines()[0][:500] if trace else None


class Connect:
    def __init__(self, http: httpx.Client):
        self.http = http

    def put_config(self, name: str, config: Mapping[str, str]) -> None:
        """Create or update connector ``name`` (the same config twice changes nothing)."""
        self._call("PUT", f"/connectors/{name}/config", json=dict(config))

    def status(self, name: str) -> ConnectorState | None:
        """Its state, or None when Connect has no such connector."""
        body = self._call("GET", f"/connectors/{name}/status", missing_ok=True)
        if body is None:
            return None
        c = body.get("connector") or {}
        tasks = tuple(TaskState(int(t["id"]), str(t["state"]), t.get("trace")) for t in body.get("tasks") or ())
        return ConnectorState(name, str(c.get("state", "UNASSIGNED")), tasks, c.get("trace"))

    def names(self) -> list[str]:
        return list(self._call("GET", "/connectors") or [])

    def restart_failed(self, name: str) -> None:
        """Restart the connector's failed instance and failed tasks (others keep running)."""
        self._call("POST", f"/connectors/{name}/restart?includeTasks=true&onlyFailed=true", missing_ok=True)

    def remove(self, name: str) -> None:
        """Stop it, delete its source offsets, delete it: a connector registered again later under
        the same name starts from a fresh snapshot, not from a position its database no longer has.
        Nothing to remove is no error."""
        if self._call("PUT", f"/connectors/{name}/stop", missing_ok=True) is None and name not in self.names():
            return
        self._call("DELETE", f"/connectors/{name}/offsets", missing_ok=True)
        self._call("DELETE", f"/connectors/{name}", missing_ok=True)

    def _call(self, method: str, path: str, *, json: Any = None, missing_ok: bool = False) -> Any:
        try:
            response = self.http.request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise ConnectUnavailable(f"Kafka Connect at {self.http.base_url} did not answer: {exc}") from None
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 500 or response.status_code == 409:
            raise ConnectUnavailable(f"Kafka Connect answered {method} {path} with {response.status_code}: "
                                     f"{_message(response)}")
        if response.status_code >= 400:
            raise ConnectRefused(f"Kafka Connect refused {method} {path} ({response.status_code}): "
                                 f"{_message(response)}")
        return response.json() if response.content else {}


def client(url: str, timeout: float = TIMEOUT) -> Connect:
    """The Connect client of ``url`` (credentials, when the cluster gets them, are added here)."""
    return Connect(httpx.Client(base_url=url.rstrip("/"), timeout=timeout))


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", response.text))[:500]
    except ValueError:
        return response.text[:500]
