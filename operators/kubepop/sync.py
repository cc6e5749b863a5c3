"""The GitOps sync of a locally run Kubernetes PoP (``python -m operators.kubepop.sync``): it stands
in for Argo CD, which a real PoP runs instead, and does only the part of Argo CD the platform
relies on.

Every ``interval`` seconds it fetches the GitOps remote (a read-only bare mirror in
``DBAAS_STATE_DIR``), reads the Argo CD Applications under ``argocd/applications/`` whose
destination is this PoP (``spec.destination.name``), and for each one, like Argo CD's automated
sync with ``prune`` and ``CreateNamespace=true``:

- creates the destination namespace;
- applies every manifest under the Application's ``source.path`` (recursively when
  ``directory.recurse``; ``directory.include`` honoured) with **server-side apply** (field manager
  ``dbaas-gitops-sync``), in sync-wave order (``argocd.argoproj.io/sync-wave``), each object
  labelled ``dbaas.io/sync-app: <application>`` and annotated with Argo CD's tracking id;
- then **prunes** (``PruneLast``) every object it labelled for that Application that git no longer
  holds — except objects whose ``argocd.argoproj.io/sync-options``
  say ``Prune=false`` (deletion-protected services); an Application gone from git has all its
  objects pruned (the ``resources-finalizer`` behaviour) except those marked ``Delete=false``.

Pruning uses background propagation, not the Applications' foreground: a locally run PoP has no
controller manager, whose garbage collector is what completes a foreground deletion; the objects
the platform renders have no dependents of their own there. Finalizers (the PoP operator's) hold a
deletion as in any cluster.

It never writes status and never reads the platform's Kafka: what the PoP reports is the PoP
operator's job. A tip already synced is synced again every ``resync`` seconds (Argo CD's
self-heal: a hand-made change is put back). The kinds it ever applied are kept in a state file so a
kind whose last object left git is still pruned after a restart.

Environment: DBAAS_GITOPS_REMOTE, DBAAS_KUBECONFIG, DBAAS_POP, DBAAS_STATE_DIR,
DBAAS_METRICS_PORT, optional DBAAS_KUBE_SYNC_INTERVAL, DBAAS_KUBE_SYNC_RESYNC.

May import: ``runtime``, ``operators.kubepop``, GitPython, the kubernetes client, PyYAML.
"""
from __future__ import annotations

import fnmatch
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git
import structlog
import yaml
from prometheus_client import Counter, Gauge, Histogram

from runtime.settings import SettingsError, env, read

log = structlog.get_logger("operators.kubepop.sync")

FIELD_MANAGER = "dbaas-gitops-sync"
APP_LABEL = "dbaas.io/sync-app"
TRACKING_ANNOTATION = "argocd.argoproj.io/tracking-id"
WAVE_ANNOTATION = "argocd.argoproj.io/sync-wave"
OPTIONS_ANNOTATION = "argocd.argoproj.io/sync-options"
APPLICATIONS_DIR = "argocd/applications/"

SYNCS = Counter("dbaas_kube_sync_syncs_total", "Syncs of the GitOps repository into the PoP's API server",
                ["outcome"])
APPLIED = Counter("dbaas_kube_sync_applied_total", "Objects applied (server-side apply)", ["kind"])
PRUNED = Counter("dbaas_kube_sync_pruned_total", "Objects pruned because git no longer holds them", ["kind"])
OBJECTS = Gauge("dbaas_kube_sync_objects", "Objects git holds for this PoP at the last sync")
SYNC_SECONDS = Histogram("dbaas_kube_sync_seconds", "Duration of one sync",
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


class SyncError(Exception):
    """A sync could not finish (git or the API server unavailable, a manifest refused): the next
    sync tries again."""


# -- settings ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyncSettings:
    gitops_remote: str = env("DBAAS_GITOPS_REMOTE")
    kubeconfig: Path = env("DBAAS_KUBECONFIG", parse=Path)
    pop: str = env("DBAAS_POP")
    state_dir: Path = env("DBAAS_STATE_DIR", Path("/tmp/dbaas-kube-sync"))
    interval: float = env("DBAAS_KUBE_SYNC_INTERVAL", 1.0)
    resync: float = env("DBAAS_KUBE_SYNC_RESYNC", 30.0)
    metrics_port: int = env("DBAAS_METRICS_PORT", 0)
    branch: str = "main"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SyncSettings:
        return read(cls, environ)


# -- the pure part -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Application:
    name: str
    path: str
    namespace: str
    recurse: bool = True
    include: str | None = None


@dataclass
class Desired:
    """What git asks for, per Application: object key -> manifest (labelled and annotated)."""

    apps: dict[str, Application] = field(default_factory=dict)
    objects: dict[str, dict[str, dict]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def applications(files: Mapping[str, str], pop: str) -> tuple[dict[str, Application], list[str]]:
    """The Applications under ``argocd/applications/`` whose destination is ``pop``."""
    apps: dict[str, Application] = {}
    problems: list[str] = []
    for path in sorted(files):
        if not path.startswith(APPLICATIONS_DIR) or not path.endswith((".yaml", ".yml")):
            continue
        try:
            docs = [d for d in yaml.safe_load_all(files[path]) if d]
        except yaml.YAMLError as exc:
            problems.append(f"{path}: not YAML ({exc})")
            continue
        for doc in docs:
            if doc.get("kind") != "Application":
                continue
            spec = doc.get("spec") or {}
            dest, source = spec.get("destination") or {}, spec.get("source") or {}
            if dest.get("name") != pop or not source.get("path"):
                continue
            directory = source.get("directory") or {}
            name = (doc.get("metadata") or {}).get("name", "")
            apps[name] = Application(name, source["path"].strip("/"), dest.get("namespace") or "default",
                                     bool(directory.get("recurse", False)), directory.get("include") or None)
    return apps, problems


def object_key(obj: Mapping[str, Any]) -> str:
    """``group/kind/namespace/name``: one object of the PoP."""
    group = obj["apiVersion"].rpartition("/")[0] if "/" in obj["apiVersion"] else ""
    meta = obj.get("metadata") or {}
    return f"{group}/{obj['kind']}/{meta.get('namespace') or ''}/{meta['name']}"


def _in_app(path: str, app: Application) -> bool:
    if not path.startswith(app.path + "/") or not path.endswith((".yaml", ".yml", ".json")):
        return False
    rest = path[len(app.path) + 1:]
    if "/" in rest and not app.recurse:
        return False
    return app.include is None or fnmatch.fnmatch(rest.rpartition("/")[2], app.include)


def desired(files: Mapping[str, str], pop: str, namespaced: Callable[[str, str], bool]) -> Desired:
    """Every object git holds for ``pop``, by Application. ``namespaced(apiVersion, kind)`` says
    whether a kind lives in a namespace (the Application's destination namespace is set on those
    that name none)."""
    apps, problems = applications(files, pop)
    out = Desired(apps=apps, problems=problems)
    for app in apps.values():
        objects: dict[str, dict] = {}
        for path in sorted(p for p in files if _in_app(p, app)):
            try:
                docs = [d for d in yaml.safe_load_all(files[path]) if d]
            except yaml.YAMLError as exc:
                out.problems.append(f"{path}: not YAML ({exc})")
                continue
            for doc in docs:
                if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind") or not (
                        doc.get("metadata") or {}).get("name"):
                    out.problems.append(f"{path}: a document without apiVersion, kind or metadata.name")
                    continue
                meta = doc.setdefault("metadata", {})
                if namespaced(doc["apiVersion"], doc["kind"]):
                    meta.setdefault("namespace", app.namespace)
                else:
                    meta.pop("namespace", None)
                meta.setdefault("labels", {})[APP_LABEL] = app.name
                group = doc["apiVersion"].rpartition("/")[0]
                meta.setdefault("annotations", {})[TRACKING_ANNOTATION] = (
                    f"{app.name}:{group}/{doc['kind']}:{meta.get('namespace', '')}/{meta['name']}")
                objects[object_key(doc)] = doc
        out.objects[app.name] = objects
    return out


def wave(obj: Mapping[str, Any]) -> int:
    try:
        return int(((obj.get("metadata") or {}).get("annotations") or {}).get(WAVE_ANNOTATION, "0"))
    except ValueError:
        return 0


def sync_options(obj: Mapping[str, Any]) -> set[str]:
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(OPTIONS_ANNOTATION, "")
    return {part.strip() for part in text.split(",") if part.strip()}


def to_prune(live: Iterable[Mapping[str, Any]], wanted: Mapping[str, Mapping[str, dict]]) -> list[Mapping[str, Any]]:
    """Live objects this sync labelled that git no longer holds: those of a known Application that
    it no longer lists (unless ``Prune=false``), and those of an Application gone from git (unless
    ``Delete=false``)."""
    doomed = []
    for obj in live:
        app = ((obj.get("metadata") or {}).get("labels") or {}).get(APP_LABEL)
        if app is None:
            continue
        options = sync_options(obj)
        if app in wanted:
            if object_key(obj) not in wanted[app] and "Prune=false" not in options:
                doomed.append(obj)
        elif "Delete=false" not in options:
            doomed.append(obj)
    return doomed


# -- git ---------------------------------------------------------------------------------------
class GitMirror:
    """A read-only bare mirror of the GitOps branch: the files under ``argocd/applications/`` and
    ``tenants/`` at the tip."""

    def __init__(self, remote: str, path: Path, branch: str = "main"):
        self.remote, self.path, self.branch = remote, path, branch
        self._repo: git.Repo | None = None
        self._blobs: dict[str, str] = {}

    def tip(self) -> str | None:
        repo = self._open()
        ref = f"refs/remotes/origin/{self.branch}"
        try:
            repo.git.fetch("--quiet", "--no-tags", "origin", f"+refs/heads/{self.branch}:{ref}",
                           env={"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"})
        except git.GitCommandError as exc:
            if "couldn't find remote ref" in str(exc.stderr).lower():
                return None
            raise SyncError(f"the GitOps remote {self.remote} cannot be read: {str(exc.stderr).strip()}") from None
        return repo.git.rev_parse("--verify", f"{ref}^{{commit}}")

    def files(self, tip: str) -> dict[str, str]:
        repo = self._open()
        listing = repo.git.ls_tree("-r", "--full-tree", tip, "--", "argocd/applications/", "tenants/")
        files, kept = {}, {}
        for line in listing.splitlines():
            meta, _, path = line.partition("\t")
            parts = meta.split()
            if len(parts) != 3 or parts[1] != "blob":
                continue
            blob = parts[2]
            if blob not in self._blobs:
                self._blobs[blob] = repo.git.cat_file("blob", blob, strip_newline_in_stdout=False)
            kept[blob] = self._blobs[blob]
            files[path] = kept[blob]
        self._blobs = kept
        return files

    def _open(self) -> git.Repo:
        if self._repo is None:
            if (self.path / "HEAD").exists():
                repo = git.Repo(self.path)
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                repo = git.Repo.init(self.path, bare=True)
            if not any(r.name == "origin" for r in repo.remotes):
                repo.create_remote("origin", self.remote)
            self._repo = repo
        return self._repo

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None


# -- the API server ----------------------------------------------------------------------------
class Cluster:
    """Server-side apply, list by label and delete, through the kubernetes client's dynamic API."""

    def __init__(self, kubeconfig: Path):
        from kubernetes import config, dynamic

        self._api = config.new_client_from_config(config_file=str(kubeconfig))
        self._dyn = dynamic.DynamicClient(self._api)

    def resource(self, api_version: str, kind: str):
        return self._dyn.resources.get(api_version=api_version, kind=kind)

    def namespaced(self, api_version: str, kind: str) -> bool:
        try:
            return bool(self.resource(api_version, kind).namespaced)
        except Exception:  # an unknown kind: applying it will say so
            return True

    def ensure_namespace(self, name: str, app: str) -> None:
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        self.resource("v1", "Namespace").server_side_apply(body=ns, name=name, field_manager=FIELD_MANAGER,
                                                         force_conflicts=True)

    def apply(self, obj: dict) -> None:
        meta = obj["metadata"]
        self.resource(obj["apiVersion"], obj["kind"]).server_side_apply(
            body=obj, name=meta["name"], namespace=meta.get("namespace"), field_manager=FIELD_MANAGER,
            force_conflicts=True)

    def labelled(self, kinds: Iterable[tuple[str, str]]) -> list[dict]:
        found = []
        for api_version, kind in kinds:
            try:
                items = self.resource(api_version, kind).get(label_selector=APP_LABEL).to_dict()["items"]
            except Exception as exc:
                if getattr(exc, "status", None) == 404 or type(exc).__name__ == "ResourceNotFoundError":
                    continue
                raise
            for item in items:
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                found.append(item)
        return found

    def delete(self, obj: Mapping[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        meta = obj["metadata"]
        try:
            self.resource(obj["apiVersion"], obj["kind"]).delete(
                name=meta["name"], namespace=meta.get("namespace"), body={"propagationPolicy": "Background"})
        except ApiException as exc:
            if exc.status != 404:
                raise

    def close(self) -> None:
        self._api.close()


# -- the process -------------------------------------------------------------------------------
class Sync:
    def __init__(self, settings: SyncSettings, mirror: GitMirror, cluster: Cluster):
        self.settings, self.mirror, self.cluster = settings, mirror, cluster
        self.state_path = settings.state_dir / "kube-sync.json"
        self.kinds: set[tuple[str, str]] = self._load_kinds()
        self.synced_tip: str | None = None
        self.synced_at = 0.0
        self._problems: set[str] = set()
        self._failing: str | None = None

    @classmethod
    def build(cls, settings: SyncSettings) -> Sync:
        return cls(settings, GitMirror(settings.gitops_remote, settings.state_dir / "gitops-mirror.git",
                                       settings.branch), Cluster(settings.kubeconfig))

    def _load_kinds(self) -> set[tuple[str, str]]:
        try:
            return {tuple(k) for k in json.loads(self.state_path.read_text())["kinds"]}  # type: ignore[misc]
        except FileNotFoundError:
            return set()

    def _save_kinds(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps({"pop": self.settings.pop, "kinds": sorted(self.kinds)}))
        os.replace(tmp, self.state_path)

    def tick(self) -> None:
        started = time.perf_counter()
        try:
            tip = self.mirror.tip()
            if tip is not None and (tip != self.synced_tip or time.monotonic() - self.synced_at > self.settings.resync):
                self.sync(tip)
        except Exception as exc:  # noqa: BLE001 — logged and counted; the next tick retries
            SYNCS.labels("failed").inc()
            if self._failing != str(exc):
                log.warning("sync failed; retrying", error=str(exc), error_type=type(exc).__name__)
            self._failing = str(exc)
            self.synced_tip = None
            return
        if self._failing is not None:
            log.info("sync works again")
            self._failing = None
        SYNC_SECONDS.observe(time.perf_counter() - started)

    def sync(self, tip: str) -> None:
        files = self.mirror.files(tip)
        want = desired(files, self.settings.pop, self.cluster.namespaced)
        for problem in sorted(set(want.problems) - self._problems):
            log.error("manifest ignored", reason=problem)
        self._problems = set(want.problems)
        new_kinds = {(o["apiVersion"], o["kind"]) for objs in want.objects.values() for o in objs.values()}
        if not new_kinds <= self.kinds:
            self.kinds |= new_kinds
            self._save_kinds()
        count = 0
        for app in want.apps.values():
            self.cluster.ensure_namespace(app.namespace, app.name)
            for obj in sorted(want.objects[app.name].values(), key=lambda o: (wave(o), object_key(o))):
                self.cluster.apply(obj)
                APPLIED.labels(obj["kind"]).inc()
                count += 1
        for obj in to_prune(self.cluster.labelled(sorted(self.kinds)), want.objects):
            self.cluster.delete(obj)
            PRUNED.labels(obj["kind"]).inc()
            log.info("pruned", kind=obj["kind"], namespace=obj["metadata"].get("namespace"),
                     name=obj["metadata"]["name"], app=obj["metadata"]["labels"][APP_LABEL])
        OBJECTS.set(count)
        if tip != self.synced_tip:
            log.info("synced", tip=tip, applications=len(want.apps), objects=count)
        self.synced_tip, self.synced_at = tip, time.monotonic()
        SYNCS.labels("ok").inc()

    def close(self) -> None:
        self.mirror.close()
        self.cluster.close()


def run(settings: SyncSettings, stop: threading.Event) -> None:
    sync = Sync.build(settings)
    log.info("started", pop=settings.pop, remote=settings.gitops_remote, kinds=len(sync.kinds))
    try:
        while not stop.is_set():
            sync.tick()
            stop.wait(settings.interval)
    finally:
        sync.close()
        log.info("stopped")


def main() -> int:
    from runtime import process

    return process.main("kube-sync", SyncSettings.from_env, run, (SettingsError,))


if __name__ == "__main__":
    raise SystemExit(main())
