"""Orchestrates the local platform: ``up`` (idempotent), ``down`` (stops exactly what it
started), ``status`` (each component's state and endpoint), ``logs`` and ``reset``.

Components start in dependency order, each waited for until it answers its own protocol, with
progress printed as it goes. A missing prerequisite (Java, a free port, disk space, Maven
Central) stops ``up`` with a message saying what to do.

What the launcher prints and the logs it shows carry no secrets (``redact``): DSN passwords and
the instance's generated secrets appear as ``***``; ``status(show_secrets=True)`` (the default for
programs, ``--show-secrets`` on the command line) gives the real endpoints.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from deploy.stack import artifacts
from deploy.stack import config as stack_config
from deploy.stack.base import Component, Context, StackError, java_major, port_open
from deploy.stack.components import CONTROL_PLANE, INFRASTRUCTURE, kube_pop_components, replica_components
from deploy.stack.observability import OBSERVABILITY
from deploy.stack.processes import PidFile, spawn, stop
from deploy.stack.redact import redact_dsn, redact_text
from deploy.stack.tracing import TRACING
from runtime import files

MIN_FREE_BYTES = 2 * 1024**3
START_TIMEOUT = 180.0


@dataclass
class ComponentStatus:
    name: str
    state: str  # healthy | unhealthy | stopped
    pid: int | None
    endpoint: str | None


class Launcher:
    def __init__(self, config: stack_config.StackConfig, say: Callable[[str], None] = print,
                 components: Iterable[Component] = INFRASTRUCTURE + CONTROL_PLANE + OBSERVABILITY + TRACING):
        self.config = config
        self.say = lambda msg: say(self.redact(msg))
        # DBAAS_STACK_WITHOUT=saga,localpop-agent leaves components out (benchmarks of one part).
        left_out = {n.strip() for n in os.environ.get("DBAAS_STACK_WITHOUT", "").split(",") if n.strip()}
        components = list(components)
        named = {c.name for c in components}
        # the Kubernetes PoPs this instance runs (`up --kube-pop`), after the platform they report to
        components += [c for c in kube_pop_components(config.kube_pops) if c.name not in named]
        # more instances of the components sharing partitions (`up --replicas N`); a component left
        # out is left out with its instances
        replicas = replica_components(config.replicas)
        components += [c for c in replicas if c.name not in named]
        left_out |= {c.name for c in replicas if c.instance_of in left_out}
        self.components = [c for c in components if c.name not in left_out]
        # left out of this `up`: stopped if an earlier `up` started them (a benchmark of the event
        # spine must not share the cores with a saga still rendering), and by `down` like the rest
        self.left_out = [c for c in components if c.name in left_out]
        self.ctx = Context(config, lambda: artifacts.ensure(config.cache, self.say), self.say,
                           components=tuple(self.components))

    # -- helpers ---------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        """``text`` without DSN passwords or any of the instance's secrets (read, never generated)."""
        try:
            values = json.loads(self.config.secrets_file.read_text()).values()
        except (OSError, ValueError):
            values = ()
        return redact_text(text, [v for v in values if isinstance(v, str)])

    def pidfile(self, comp: Component) -> PidFile:
        return PidFile(self.config.run_dir / f"{comp.name}.pid")

    def log_path(self, name: str) -> Path:
        return self.config.log_dir / f"{name}.log"

    def _check_prerequisites(self) -> None:
        major = java_major()
        if major is None or major < 17:
            raise StackError("Java 17 or newer is needed for Kafka, Connect and the registry: "
                             "install it (apt-get install -y openjdk-17-jre-headless) and run again")
        self.config.home.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.config.home).free
        if free < MIN_FREE_BYTES:
            raise StackError(f"only {free // 1024**2} MiB free under {self.config.home}; the platform "
                             "needs at least 2 GiB: free some space or choose another --home")
        for comp in self.components:
            if comp.port_name and self.pidfile(comp).pid() is None:
                port = self.config.port(comp.port_name)
                if port_open(port):
                    raise StackError(
                        f"port {port} ({comp.name}) is taken by another process; stop it, or pick other "
                        f"ports with --port-offset N or DBAAS_{comp.port_name.upper()}_PORT")
        for comp in self.components:
            if self.pidfile(comp).pid() is None:
                for port in comp.extra_ports(self.ctx):
                    if port_open(port):
                        raise StackError(f"port {port} ({comp.name}) is taken by another process; pick other "
                                         "ports with --port-offset N")
        for owner, extra in (("kafka", "controller"), ("registry", "registry_management")):
            pidfile = self.pidfile_by_name(owner)
            if pidfile and pidfile.pid() is None and port_open(self.config.port(extra)):
                raise StackError(f"port {self.config.port(extra)} ({extra}) is taken by another process; "
                                 f"pick other ports with --port-offset N or DBAAS_{extra.upper()}_PORT")

    def pidfile_by_name(self, name: str) -> PidFile | None:
        for comp in self.components:
            if comp.name == name:
                return self.pidfile(comp)
        return None

    # -- up --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _exclusive(self):
        """One `up`/`down` of an instance at a time: two at once (two test sessions, a second shell)
        would each start a supervisor for the same component."""
        self.config.home.mkdir(parents=True, exist_ok=True)
        with open(self.config.home / "stack.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.say(f"waiting for another `dbaas stack` command on {self.config.home}…")
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def up(self, timeout: float = START_TIMEOUT) -> list[ComponentStatus]:
        with self._exclusive():
            return self._up(timeout)

    def _up(self, timeout: float) -> list[ComponentStatus]:
        self._check_prerequisites()
        for comp in reversed(self.left_out):
            if comp.has_process and stop(self.pidfile(comp), comp.stop_signal):
                self.say(f"stopped {comp.name} (left out)")
        stack_config.save(self.config)
        started = time.monotonic()
        pending = deque(self.components)
        healthy: set[str] = set()
        waiting: dict[str, tuple[Component, float]] = {}
        total = len(self.components)
        while pending or waiting:
            # start everything whose dependencies are healthy
            for _ in range(len(pending)):
                comp = pending.popleft()
                if not set(comp.needs) <= healthy:
                    pending.append(comp)
                    continue
                self._start(comp)
                waiting[comp.name] = (comp, time.monotonic())
            # wait for one round of probes
            for name, (comp, since) in list(waiting.items()):
                if comp.has_process and self.pidfile(comp).pid() is None:
                    raise StackError(f"{comp.name} exited during start-up; see `dbaas stack logs "
                                     f"{comp.name}`:\n{self._tail(comp.name, 15)}")
                if comp.healthy(self.ctx):
                    comp.after_healthy(self.ctx)
                    healthy.add(name)
                    del waiting[name]
                    self.say(f"[{len(healthy)}/{total}] {name:<9} healthy  "
                             f"{redact_dsn(comp.endpoint(self.ctx)) or '':<48} ({time.monotonic() - since:.1f}s)")
                elif time.monotonic() - since > timeout:
                    raise StackError(f"{comp.name} did not become healthy within {timeout:.0f}s; see "
                                     f"`dbaas stack logs {comp.name}`:\n{self._tail(comp.name, 15)}")
            if waiting:
                time.sleep(0.25)
        self.say(self.config.sign_in.describe())
        self.say(f"platform up in {time.monotonic() - started:.1f}s (home {self.config.home})")
        return self.status()

    def settings_file(self, comp: Component) -> Path:
        """The fingerprint of the settings ``comp``'s running process was started with."""
        return self.config.run_dir / f"{comp.name}.settings"

    def _start(self, comp: Component) -> None:
        comp.prepare(self.ctx)
        if not comp.has_process:
            return
        fingerprint = comp.settings_fingerprint(self.ctx)
        if self.pidfile(comp).pid() is not None:
            recorded = self.settings_file(comp)
            if fingerprint is None or (recorded.exists() and recorded.read_text().strip() == fingerprint):
                return
            # A process reads its settings once, at start: changed settings (sign-in issuers, keys,
            # endpoints) need a new process, or the old ones would silently stay in force.
            self.say(f"        {comp.name:<9} settings changed: restarting… (its environment or its code)")
            stop(self.pidfile(comp), comp.stop_signal)
        else:
            self.say(f"        {comp.name:<9} starting…")
        spawn(comp.argv(self.ctx), self.log_path(comp.name), self.pidfile(comp),
              env=comp.env(self.ctx), cwd=self.config.home, user=comp.user(self.ctx))
        if fingerprint is not None:
            files.replace_text(self.settings_file(comp), fingerprint + "\n")

    # -- down ------------------------------------------------------------------------------
    def down(self) -> list[str]:
        with self._exclusive():
            return self._down()

    def stop(self, names: Iterable[str]) -> list[str]:
        """Stop the named components only (those of a Kubernetes PoP no longer run)."""
        wanted = set(names)
        with self._exclusive():
            stopped = []
            for comp in reversed(self.components):
                if comp.name in wanted and comp.has_process and stop(self.pidfile(comp), comp.stop_signal):
                    stopped.append(comp.name)
                    self.say(f"stopped {comp.name}")
            return stopped

    def _down(self) -> list[str]:
        stopped = []
        for comp in reversed(self.components + self.left_out):
            if comp.has_process and stop(self.pidfile(comp), comp.stop_signal):
                stopped.append(comp.name)
                self.say(f"stopped {comp.name}")
        return stopped

    # -- status ----------------------------------------------------------------------------
    def status(self, show_secrets: bool = True) -> list[ComponentStatus]:
        """Each component's state; endpoints with their passwords unless ``show_secrets`` is off."""
        result = []
        for comp in self.components:
            pid = self.pidfile(comp).pid() if comp.has_process else None
            if comp.has_process and pid is None:
                state = "stopped"
            else:
                state = "healthy" if comp.healthy(self.ctx) else "unhealthy"
            endpoint = comp.endpoint(self.ctx) if state != "stopped" or not comp.has_process else None
            if not show_secrets:
                endpoint = redact_dsn(endpoint)
            result.append(ComponentStatus(comp.name, state, pid, endpoint))
        return result

    # -- logs / reset ----------------------------------------------------------------------
    def _tail(self, name: str, lines: int) -> str:
        path = self.log_path(name)
        if not path.exists():
            return "(no log yet)"
        return self.redact("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))

    def logs(self, name: str | None, lines: int) -> str:
        names = [name] if name else [c.name for c in self.components if c.has_process]
        return "\n".join(f"==> {n} <==\n{self._tail(n, lines)}" for n in names)

    def reset(self) -> None:
        self.down()
        for comp in self.components:
            for path in comp.reset_paths(self.ctx):
                shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(self.config.home, ignore_errors=True)
        self.say(f"removed {self.config.home}")
