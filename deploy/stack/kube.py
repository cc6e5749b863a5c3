"""The local stand-in of a Kubernetes PoP: a real ``etcd`` and ``kube-apiserver`` per PoP named with
``dbaas stack up --kube-pop NAME`` (or ``DBAAS_KUBE_POPS``), with the GitOps sync and the PoP
operator beside them. ``make up`` alone starts none of it.

Binaries: ``deploy/scripts/ensure-kube.sh`` finds or builds them — ``$DBAAS_KUBE_APISERVER`` /
``$DBAAS_ETCD``, else the per-user tool cache (``~/.cache/dbaas/tools/kube-apiserver-<version>``,
``etcd-<version>``), built once from the Go module proxy through the wrapper modules in
``deploy/tools/kubernetes`` and ``deploy/tools/etcd`` (a cold build takes 10–25 minutes on two
cores; every clone of the user reuses it).

Per PoP (files in ``<home>/kube/<pop>``): etcd on loopback (client and peer ports), the API server
on loopback over TLS (a CA and serving certificate generated per instance), authentication on —
bearer tokens from a token file, one per identity (the administrator in ``system:masters``, the
GitOps sync, the PoP operator), anonymous requests refused, RBAC authorization — and a
service-account signing key. ``kubeconfig`` is the administrator's (``dbaas stack status --json``
shows its path under ``kube_pops``); ``kubeconfig-sync`` and ``kubeconfig-operator`` are what the
sync and the operator use. Healthy means ``/readyz`` answers the administrator; once healthy, the
CRDs are applied (server-side apply) and waited for until established: ours
(``deploy/crds/*.yaml``) and the six engine operators' (``deploy/crds/engines``, see its
SOURCES.md), plus the PoP operator's RBAC rendered from its Helm chart.

Ports, per PoP in the order of the catalogue's Kubernetes PoPs: a block of five from ``kube``
(API server, etcd client, etcd peer), and two metrics slots per PoP from ``metrics`` + 10.

Owns: finding the binaries, certificates and tokens, etcd and the API server as processes, the
CRDs. Imports: ``deploy.stack.base`` and the catalogue of PoPs (``schemas.catalog``).
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import secrets
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from deploy.stack.base import Component, Context, StackError
from deploy.stack.config import HOST, REPO_ROOT
from schemas.catalog import KUBERNETES_POPS

ENSURE_SCRIPT = REPO_ROOT / "deploy" / "scripts" / "ensure-kube.sh"
WRAPPERS = {"kube-apiserver": ("kubernetes", "k8s.io/kubernetes"), "etcd": ("etcd", "go.etcd.io/etcd/server/v3")}
OVERRIDES = {"kube-apiserver": "DBAAS_KUBE_APISERVER", "etcd": "DBAAS_ETCD"}
CRD_FILES = (sorted((REPO_ROOT / "deploy" / "crds").glob("*.yaml"))
             + sorted((REPO_ROOT / "deploy" / "crds" / "engines").glob("*.yaml")))
PORTS_PER_POP = 5  # API server, etcd client, etcd peer, two spare
METRICS_SLOT_BASE = 10  # sync and operator metrics: metrics + 10 + 2 * index (+1)
SERVICE_CIDR = "10.96.0.0/24"  # never routed: no node, no pod, no kube-proxy here
ETCD_MEMORY_LIMIT = "256MiB"
APISERVER_MEMORY_LIMIT = "512MiB"
# Identities in the token file: name -> (user, groups). The sync stands in for Argo CD, which runs
# with cluster-admin rights; the operator gets only its chart's ClusterRole (deploy/charts/dbaas-pop-operator).
IDENTITIES = {
    "admin": ("dbaas-admin", ("system:masters",)),
    "sync": ("dbaas-gitops-sync", ("system:masters",)),
    "operator": ("system:serviceaccount:dbaas-system:dbaas-pop-operator",
                 ("system:serviceaccounts", "system:serviceaccounts:dbaas-system")),
}


class KubeError(StackError):
    """A kube PoP cannot be prepared or started; the message says what to do."""


def check_pops(names) -> tuple[str, ...]:
    """``names`` as a sorted tuple of Kubernetes PoPs; an unknown one is refused with the choices."""
    pops = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name not in KUBERNETES_POPS:
            raise KubeError(f"--kube-pop {name!r}: not a Kubernetes PoP; choose among {', '.join(KUBERNETES_POPS)}")
        if name not in pops:
            pops.append(name)
    return tuple(sorted(pops, key=KUBERNETES_POPS.index))


# -- binaries ----------------------------------------------------------------------------------
def pinned_version(tool: str) -> str:
    folder, module = WRAPPERS[tool]
    go_mod = REPO_ROOT / "deploy" / "tools" / folder / "go.mod"
    for line in go_mod.read_text().splitlines():
        words = line.split()
        if words[:1] == ["require"]:
            words = words[1:]
        if len(words) >= 2 and words[0] == module:
            return words[1]
    raise KubeError(f"{go_mod} requires no {module}")


def tools_cache() -> Path:
    from deploy.stack.objectstore import tools_cache as cache

    return cache()


def find_tool(tool: str) -> str | None:
    """``$DBAAS_KUBE_APISERVER`` / ``$DBAAS_ETCD``, or the cached build of the pinned version."""
    override = os.environ.get(OVERRIDES[tool])
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise KubeError(f"{OVERRIDES[tool]}={override} is not an executable file")
        return override
    cached = tools_cache() / f"{tool}-{pinned_version(tool)}"
    return str(cached) if os.access(cached, os.X_OK) else None


def ensure_tools(ctx: Context) -> dict[str, str]:
    found = {tool: find_tool(tool) for tool in WRAPPERS}
    if all(found.values()):
        return found  # type: ignore[return-value]
    log = ctx.config.log_dir / "kube-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    ctx.say(f"kube: building kube-apiserver {pinned_version('kube-apiserver')} and etcd {pinned_version('etcd')} "
            f"from the Go module proxy into {tools_cache()} (once per user: 10–25 minutes on two cores; "
            f"progress in {log})…")
    with open(log, "ab") as err:
        proc = subprocess.run([str(ENSURE_SCRIPT), "kube-apiserver", "etcd"], stdout=subprocess.PIPE, stderr=err,
                              check=False)
    paths = proc.stdout.decode().split() if proc.returncode == 0 else []
    if len(paths) != 2 or not all(os.access(p, os.X_OK) for p in paths):
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise KubeError(f"kube-apiserver and etcd could not be built (deploy/scripts/ensure-kube.sh); set "
                        f"DBAAS_KUBE_APISERVER and DBAAS_ETCD, or see {log}:\n{tail}")
    return dict(zip(("kube-apiserver", "etcd"), paths, strict=True))


# -- where a PoP lives -------------------------------------------------------------------------
class KubePop:
    """One PoP's files, ports and credentials within an instance."""

    def __init__(self, ctx: Context, pop: str):
        self.ctx, self.pop = ctx, pop
        self.index = KUBERNETES_POPS.index(pop)
        self.dir = ctx.config.home / "kube" / pop

    def port(self, which: str) -> int:
        offset = {"apiserver": 0, "etcd": 1, "etcd_peer": 2}[which]
        return self.ctx.config.port("kube") + PORTS_PER_POP * self.index + offset

    def metrics_slot(self, which: str) -> int:
        return METRICS_SLOT_BASE + 2 * self.index + {"sync": 0, "operator": 1}[which]

    @property
    def server(self) -> str:
        return f"https://{HOST}:{self.port('apiserver')}"

    @property
    def etcd_url(self) -> str:
        return f"http://{HOST}:{self.port('etcd')}"

    def path(self, name: str) -> Path:
        return self.dir / name

    def kubeconfig(self, identity: str = "admin") -> Path:
        return self.path("kubeconfig" if identity == "admin" else f"kubeconfig-{identity}")

    def tokens(self) -> dict[str, str]:
        """identity -> bearer token, generated once per PoP (0600)."""
        path = self.path("tokens.json")
        if path.exists():
            values = json.loads(path.read_text())
            if all(k in values for k in IDENTITIES):
                return values
        values = {k: secrets.token_urlsafe(32) for k in IDENTITIES}
        _write_private(path, json.dumps(values))
        return values

    def prepare(self) -> None:
        """Certificates, keys, token file and kubeconfigs (each made once; kept across restarts)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if not self.path("ca.crt").exists() or not self.path("apiserver.crt").exists():
            ca_pem, server_pem, server_key = _certificates(self.pop)
            _write_private(self.path("apiserver.key"), server_key)
            _write_private(self.path("apiserver.crt"), server_pem)
            _write_private(self.path("ca.crt"), ca_pem)
        if not self.path("sa.key").exists():
            key, pub = _service_account_key()
            _write_private(self.path("sa.pub"), pub)
            _write_private(self.path("sa.key"), key)
        tokens = self.tokens()
        lines = [f'{tokens[k]},{user},{user},"{",".join(groups)}"' for k, (user, groups) in IDENTITIES.items()]
        _write_private(self.path("tokens.csv"), "\n".join(lines) + "\n")
        for identity in IDENTITIES:
            _write_private(self.kubeconfig(identity), self.kubeconfig_text(identity))

    def kubeconfig_text(self, identity: str) -> str:
        ca = base64.b64encode(self.path("ca.crt").read_bytes()).decode()
        user = f"{identity}@{self.pop}"
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": self.pop,
            "clusters": [{"name": self.pop, "cluster": {"server": self.server, "certificate-authority-data": ca}}],
            "users": [{"name": user, "user": {"token": self.tokens()[identity]}}],
            "contexts": [{"name": self.pop, "context": {"cluster": self.pop, "user": user}}],
        }, sort_keys=False)

    def tls(self) -> ssl.SSLContext:
        """TLS that trusts the PoP's own CA only."""
        return ssl.create_default_context(cafile=str(self.path("ca.crt")))

    def client(self, identity: str = "admin", timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(base_url=self.server, verify=self.tls(), timeout=timeout,
                            headers={"Authorization": f"Bearer {self.tokens()[identity]}"})


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _certificates(pop: str) -> tuple[str, str, str]:
    """A CA of the PoP's own and the API server's certificate for 127.0.0.1 and localhost:
    (CA PEM, server certificate PEM, server key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"dbaas kube PoP {pop} CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + dt.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost"),
            x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default.svc")]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (ca.public_bytes(pem).decode(), cert.public_bytes(pem).decode(),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())


def _service_account_key() -> tuple[str, str]:
    """The key that signs service-account tokens (EC P-256): (private PEM, public PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = serialization.Encoding.PEM
    return (key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
            key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo).decode())


# -- components --------------------------------------------------------------------------------
class Etcd(Component):
    """The PoP's etcd: one member, loopback only, data in ``<home>/kube/<pop>/etcd``."""

    def __init__(self, pop: str):
        self.pop = pop
        self.name = f"etcd-{pop}"

    def prepare(self, ctx: Context) -> None:
        ensure_tools(ctx)
        KubePop(ctx, self.pop).path("etcd").mkdir(parents=True, exist_ok=True)

    def extra_ports(self, ctx: Context) -> list[int]:
        p = KubePop(ctx, self.pop)
        return [p.port("etcd"), p.port("etcd_peer")]

    def argv(self, ctx: Context) -> list[str]:
        p = KubePop(ctx, self.pop)
        peer = f"http://{HOST}:{p.port('etcd_peer')}"
        return [find_tool("etcd") or ensure_tools(ctx)["etcd"], f"--name={self.pop}",
                f"--data-dir={p.path('etcd')}", f"--listen-client-urls={p.etcd_url}",
                f"--advertise-client-urls={p.etcd_url}", f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}", f"--initial-cluster={self.pop}={peer}",
                "--initial-cluster-state=new", "--quota-backend-bytes=1073741824",
                "--snapshot-count=10000", "--log-level=warn"]

    def env(self, ctx: Context) -> dict[str, str]:
        return {"GOMEMLIMIT": ETCD_MEMORY_LIMIT}

    def healthy(self, ctx: Context) -> bool:
        try:
            r = httpx.get(f"{KubePop(ctx, self.pop).etcd_url}/health", timeout=2)
            return r.status_code == 200 and r.json().get("health") == "true"
        except Exception:
            return False

    def endpoint(self, ctx: Context) -> str:
        return KubePop(ctx, self.pop).etcd_url

    def settings_fingerprint(self, ctx: Context) -> str:
        return hashlib.sha256(json.dumps([self.argv(ctx), self.env(ctx)]).encode()).hexdigest()


class ApiServer(Component):
    """The PoP's kube-apiserver, on loopback over TLS, tokens and RBAC; installs the CRDs."""

    def __init__(self, pop: str):
        self.pop = pop
        self.name = f"kube-apiserver-{pop}"
        self.needs = (f"etcd-{pop}",)

    def prepare(self, ctx: Context) -> None:
        ensure_tools(ctx)
        KubePop(ctx, self.pop).prepare()

    def extra_ports(self, ctx: Context) -> list[int]:
        return [KubePop(ctx, self.pop).port("apiserver")]

    def argv(self, ctx: Context) -> list[str]:
        p = KubePop(ctx, self.pop)
        return [find_tool("kube-apiserver") or ensure_tools(ctx)["kube-apiserver"],
                f"--etcd-servers={p.etcd_url}", f"--etcd-prefix=/registry-{self.pop}",
                f"--bind-address={HOST}", f"--advertise-address={HOST}", f"--secure-port={p.port('apiserver')}",
                f"--tls-cert-file={p.path('apiserver.crt')}", f"--tls-private-key-file={p.path('apiserver.key')}",
                f"--token-auth-file={p.path('tokens.csv')}", "--anonymous-auth=false",
                "--authorization-mode=RBAC",
                f"--service-account-issuer=https://kubernetes.default.svc/{self.pop}",
                f"--service-account-key-file={p.path('sa.pub')}",
                f"--service-account-signing-key-file={p.path('sa.key')}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # No controller manager runs here: nothing would create the service accounts that
                # the ServiceAccount admission plugin insists on; nothing here runs pods.
                "--disable-admission-plugins=ServiceAccount",
                "--enable-priority-and-fairness=false", "--profiling=false",
                "--enable-garbage-collector=true", "--watch-cache=true", "--v=1"]

    def env(self, ctx: Context) -> dict[str, str]:
        return {"GOMEMLIMIT": APISERVER_MEMORY_LIMIT}

    def healthy(self, ctx: Context) -> bool:
        try:
            with KubePop(ctx, self.pop).client(timeout=3) as c:
                return c.get("/readyz").status_code == 200
        except Exception:
            return False

    def after_healthy(self, ctx: Context) -> None:
        p = KubePop(ctx, self.pop)
        install_crds(p)
        install_operator_rbac(p)

    def endpoint(self, ctx: Context) -> str:
        return KubePop(ctx, self.pop).server

    def settings_fingerprint(self, ctx: Context) -> str:
        return hashlib.sha256(json.dumps([self.argv(ctx), self.env(ctx)]).encode()).hexdigest()


def crd_documents() -> list[dict]:
    docs = []
    for path in CRD_FILES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                docs.append(doc)
    return docs


def install_crds(p: KubePop, timeout: float = 60.0) -> list[str]:
    """Server-side apply every CRD (field manager ``dbaas-stack``) and wait until each is
    established; the names installed."""
    names = []
    with p.client(timeout=30) as c:
        for doc in crd_documents():
            name = doc["metadata"]["name"]
            r = c.patch(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
                        params={"fieldManager": "dbaas-stack", "force": "true"},
                        content=json.dumps(doc), headers={"Content-Type": "application/apply-patch+yaml"})
            if r.status_code >= 300:
                raise KubeError(f"PoP {p.pop}: the API server refused CRD {name}: {r.status_code} {r.text[:500]}")
            names.append(name)
        deadline = time.monotonic() + timeout
        for name in names:
            while True:
                r = c.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
                conds = {x["type"]: x["status"] for x in r.json().get("status", {}).get("conditions", [])}
                if conds.get("Established") == "True":
                    break
                if time.monotonic() > deadline:
                    raise KubeError(f"PoP {p.pop}: CRD {name} was not established within {timeout:.0f}s")
                time.sleep(0.2)
    return names


OPERATOR_NAMESPACE = "dbaas-system"
OPERATOR_RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}


def install_operator_rbac(p: KubePop) -> None:
    """The PoP operator's service account and least-privilege RBAC, rendered from its Helm chart
    (``deploy/charts/dbaas-pop-operator``) exactly as a real PoP installs them; the locally run
    operator authenticates as that service account (its token in the token file). The chart's
    Deployment and volume are not applied: here the operator runs as a local process."""
    from gitops import helm

    docs = helm.render(helm.POP_OPERATOR_CHART, {"pop": p.pop, "kafka": {"bootstrap": "unused:9092"},
                                                  "registryUrl": "http://unused"}, "pop-operator", OPERATOR_NAMESPACE)
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}
    with p.client(timeout=30) as c:
        for doc in [ns, *(d for d in docs if d.get("kind") in OPERATOR_RBAC_KINDS)]:
            _apply(c, p, doc)


def _apply(c: httpx.Client, p: KubePop, doc: dict) -> None:
    group, _, version = doc["apiVersion"].rpartition("/")
    plural = {"Namespace": "namespaces", "ServiceAccount": "serviceaccounts", "ClusterRole": "clusterroles",
              "ClusterRoleBinding": "clusterrolebindings"}[doc["kind"]]
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    ns = (doc.get("metadata") or {}).get("namespace")
    url = f"{base}/namespaces/{ns}/{plural}/{doc['metadata']['name']}" if ns else \
        f"{base}/{plural}/{doc['metadata']['name']}"
    r = c.patch(url, params={"fieldManager": "dbaas-stack", "force": "true"}, content=json.dumps(doc),
                headers={"Content-Type": "application/apply-patch+yaml"})
    if r.status_code >= 300:
        raise KubeError(f"PoP {p.pop}: the API server refused {doc['kind']} {doc['metadata']['name']}: "
                        f"{r.status_code} {r.text[:500]}")


def components(pops) -> tuple[Component, ...]:
    """etcd and the API server of each PoP (the sync and the operator are added by
    ``deploy.stack.components.kube_pop_processes``)."""
    made: list[Component] = []
    for pop in pops:
        made += [Etcd(pop), ApiServer(pop)]
    return tuple(made)
